from lib.ops.resample2d import cuda_extension_available, resample2d, resample2d_reference

__all__ = ['cuda_extension_available', 'resample2d', 'resample2d_reference']
