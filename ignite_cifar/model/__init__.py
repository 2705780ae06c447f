"""The network: `resnet` builds ResNet18/34 for 32 x 32 images with LayerNorm (GroupNorm(1, C)) and no BatchNorm,
from a name or from a Config; `standardized_conv` is the weight-standardized convolution it can use.

May import: the config and ground modules. Never data, training, explain or the CLI.
"""
