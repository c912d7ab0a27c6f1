"""Tests of the data pipeline: packing and the loader."""
