"""Training: configs, the loop and checkpoints, data (manifests, dataset preparation, corpora,
augmentation, synthetic speech), evaluation and LM weight tuning."""
