"""The pipeline's stages, one module each, all with one contract: `Settings.from_params(params,
run)`, `load(run, settings) -> Inputs`, `run(inputs, settings) -> Outputs`, `write(run, outputs)`
(docs/architecture.md). No stage module imports another."""
