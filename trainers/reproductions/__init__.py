"""The papers' experiments at CPU scale and the breaking-point study, built on the training
library (``trainers``) and written to ``docs/results.md`` by ``python -m
trainers.reproductions.reproduce``; nothing in the library imports them."""
