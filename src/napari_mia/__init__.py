from ._triton_llvm import load_triton_privately

__version__ = "0.1.0"

load_triton_privately()  # before anything imports torch: see _triton_llvm
