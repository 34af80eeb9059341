"""The version of paddle_te: the one place it is written (CMakeLists.txt, setup.py and the C API
read it from here)."""

__version__ = "0.1.0"
