"""Data: how many samples each source contributes (mixtures), and later the sample store."""
