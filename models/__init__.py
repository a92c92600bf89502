"""Backbone registry, pretrained weight sources, adaptation and transfer strategies."""
