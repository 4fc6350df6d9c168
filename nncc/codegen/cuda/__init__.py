"""The CUDA target: numba.cuda kernels and a host driver that keeps every buffer on the device."""
