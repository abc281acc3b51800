"""The parts of ``env_adapters.evaluate``: model resolution, the generation engine, the episode log,
the summary."""
