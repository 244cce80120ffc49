"""One run: its identity (run id), its folder, the LightningModule and the training driver."""
