"""Tests of minimind.train."""
