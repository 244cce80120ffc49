"""The synthetic proxy task: clip generator, dataset on disk, frame pre-training, ground truth."""
