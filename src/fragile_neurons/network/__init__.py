"""The network and its gates: architectures and checkpoints, the scanned layer, the channel gate,
BatchNorm recalibration, batched inference and the training loop."""
