"""NMF Lab: matrix factorisations of a clip's spectrogram, side by side.

β-divergence NMF (:mod:`~unmixer.lab.nmf`, also used by the loop engine's purification),
convolutive NMF (:mod:`~unmixer.lab.nmfd`), complex NMF (:mod:`~unmixer.lab.complex_nmf`),
FastICA (:mod:`~unmixer.lab.ica`), HPSS + NMF (:mod:`~unmixer.lab.hpss`) and "Let it Bee"
mosaicing (:mod:`~unmixer.lab.mosaic`); components go back to audio through one Wiener-mask
resynthesis (:func:`unmixer.lab.nmf.masked_outputs`, :func:`unmixer.core.spectrum.wiener_mask`),
complex NMF's also with their own phases.
"""
