"""Mistake: model_size_bytes rounds up with np.ceil, which returns a NumPy float (4000.0), not an int.

The value is right, but the contract says an int number of bytes: a float size prints as
``4000.0``, cannot index or slice, and a NumPy scalar breaks json.dump.
"""


def model_size_bytes(num_params, bits):
    import numpy as np
    return np.ceil(num_params * bits / 8)
