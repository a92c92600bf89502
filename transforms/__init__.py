"""Loaders, intensity and spatial presets, augmentation sets and the chains built from a config."""
