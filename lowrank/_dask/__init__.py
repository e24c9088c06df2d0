"""Dask-native paths of the randomized SVD family, CR products and Gram volumes.

Selected by the input type at each public entry point; the basis stays distributed
(chunked like the rows of the input) and only small quantities come to the client.
"""
