"""The ways in: the `fragile-neurons` command, the dataset fetch before `dvc repro`, and the Python
API on any `nn.Module`."""
