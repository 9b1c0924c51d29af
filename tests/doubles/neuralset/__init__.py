"""Double of the part of ``neuralset`` 0.0.2 that TRIBE v2's text features use (tests/doubles/README.md)."""

IS_TEST_DOUBLE = True
__version__ = "0.0.0+double"
