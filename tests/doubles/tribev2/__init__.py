"""Test double of the ``tribev2`` package (see tests/doubles/README.md). Not TRIBE v2."""

IS_TEST_DOUBLE = True
__version__ = "0.0.0+double"
