"""Generation and judging engine: sweep spec -> stored generations and judge scores.

Importing this package is cheap: Ray and vLLM are imported only by the modules that need them.
"""

__version__ = "0.1.0"
