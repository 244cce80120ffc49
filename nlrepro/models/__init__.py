"""Backbones, non-local blocks, placement and ImageNet inflation."""
