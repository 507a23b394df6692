"""Backbone, decoding, data and the Lightning system that wraps backbone + objective."""
