"""NMF Lab: matrix factorisations of a clip's spectrogram, side by side.

β-divergence NMF (:mod:`~unmixer.lab.nmf`, also used by the loop engine's purification),
FastICA (:mod:`~unmixer.lab.ica`), HPSS + NMF (:mod:`~unmixer.lab.hpss`) and "Let it Bee"
mosaicing (:mod:`~unmixer.lab.mosaic`); components go back to audio through
:func:`unmixer.core.spectrum.wiener_masks`.
"""
