"""Kinetics-format video data: lists (``annotations``), decord clips (``video``),
transforms, the LightningDataModule (``datamodule``) and ``check-videos`` (``check``).

Nothing is imported here, so ``import nlrepro.data.annotations`` stays light.
"""
