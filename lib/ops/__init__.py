from .resample2d import resample2d, resample2d_reference

__all__ = ['resample2d', 'resample2d_reference']
