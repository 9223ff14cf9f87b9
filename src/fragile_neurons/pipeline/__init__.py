"""The pipeline's stages, one module each, all with one contract: `Settings.from_params(params,
name)`, `load(ctx, settings) -> Inputs`, `run(inputs, settings, progress) -> Outputs` and
`write(ctx, outputs)`, run by `running.stage` (docs/architecture.md). No stage module imports
another."""
