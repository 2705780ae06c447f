"""The names a setting may take, kept free of torch so that reading and checking a config imports none.

Each tuple belongs to the module that gives the names their meaning (named beside it); that module builds from
these names, and tests/test_config.py checks that both agree."""

ARCHITECTURES = ("resnet18", "resnet34")  # models.py: blocks per stage of each
NORMS = ("layer", "group")  # models.norm_factory
CAM_METHODS = ("gradcam", "gradcam++")  # gradcam.py: how channels are weighted
MISTAKE_ORDERS = ("confident", "first")  # mistakes.find_misclassified
