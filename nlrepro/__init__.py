"""nlrepro: a reproduction and ablation study of Non-local Neural Networks (CVPR 2018)."""

__version__ = "0.1.0"
