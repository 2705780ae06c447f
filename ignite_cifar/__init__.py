"""ignite-cifar: a LayerNorm ResNet18 trained on CIFAR-10 with PyTorch Ignite, with GradCAM on its mistakes."""

__version__ = "0.1.0"
