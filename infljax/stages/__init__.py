"""The built-in stages, one module each, named as in `infljax.pipeline.STAGE_ORDER` (each with
`run(config, workdir)` and maybe `check(config)`; `infljax.pipeline.stage_module`)."""
