"""Builders of one's own architectures: `runs.<name>.arch: archs.<module>:<function>`.

A builder has the signature of the registry's (src/fragile_neurons/models.py):
``(channels, size, classes) -> [(name, nn.Module), ...]``, the layers that follow the model's own
normalisation, with at least one ``nn.Conv2d``. dvc.yaml makes this whole folder a dependency of
every stage that builds a model, so an edited builder retrains (docs/guide.md: "Your own
architecture in the pipeline").
"""
