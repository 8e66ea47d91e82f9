"""Runs beyond one strategy's: the claims' replays (replays) and the bias probe of `hpo probe`
(probe). Imports strategies and the stages below them."""
