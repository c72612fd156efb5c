"""The embedded default model: where its files live and how they are put together."""
