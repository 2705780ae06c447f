"""Data: images in, batches out.

`datasets` reads CIFAR-10, an image folder or synthetic data into uint8 N x 32 x 32 x 3 arrays with labels and
class names; `augment` is the albumentations recipe (train and normalize-only eval pipelines); `device_augment`
applies the same recipe as batched tensor ops on the device; `loaders` turns the splits into data loaders through
ignite.distributed.

May import: the config and ground modules (config, config_checks, errors, files, signals). Never the model, training,
explain or the CLI.
"""
