"""FITS image cutouts laid out as Rubin's are: image, mask and variance planes plus a PSF.

Each cutout is a multi-extension FITS file: an empty primary HDU, then ``IMAGE`` (float32, nJy),
``MASK`` (int32 bit planes, with the bit names in the header as LSST's afw writes them),
``VARIANCE`` (float32, nJy^2), each with a TAN WCS centred on the source, and ``PSF`` (the
normalised PSF kernel as a float32 image). Rubin stores its PSF as afw binary-table archives; an
image of the kernel carries the same information at a similar size and is readable by anyone.

Why templates: astropy's ``HDUList.writeto`` takes ~5 ms per cutout here, i.e. 15 ms per alert and
2.5 minutes for one 10,000-alert visit, which would make the simulator, not the transport, the
subject of every benchmark. So astropy writes one real FITS file per cutout side once; each cutout
is that file with its pixel data and its CRVAL cards (rendered by astropy's ``Card``) replaced.
The layout, padding and every other card are astropy's own; tests open every cutout with astropy.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

PIXEL_SCALE_ARCSEC = 0.2
"""LSSTCam plate scale."""

PSF_SIDE = 25
"""Side of the PSF kernel image, pixels (odd, so the kernel has a centre pixel)."""

MASK_PLANES = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
}
"""Mask bit planes as LSST's afw names them (a subset; the header carries the mapping)."""

CUTOUT_KINDS = ("Difference", "Science", "Template")


@dataclass(frozen=True)
class _Template:
    blob: bytes
    data_offsets: tuple[int, int, int, int]  # IMAGE, MASK, VARIANCE, PSF
    crval_offsets: tuple[tuple[int, int], ...]  # (CRVAL1 card offset, CRVAL2 card offset) per plane


def _wcs_header(side: int) -> fits.Header:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crpix = [(side + 1) / 2.0, (side + 1) / 2.0]  # FITS pixels are 1-based
    wcs.wcs.crval = [0.0, 0.0]
    scale = PIXEL_SCALE_ARCSEC / 3600.0
    wcs.wcs.cd = np.array([[-scale, 0.0], [0.0, scale]])
    wcs.wcs.radesys = "ICRS"
    return wcs.to_header()


@functools.cache
def _template(side: int) -> _Template:
    """A real FITS cutout of ``side`` pixels written by astropy, and where to patch it."""
    primary = fits.PrimaryHDU()
    primary.header["ORIGIN"] = ("alertbench", "simulated Rubin-like cutout")
    primary.header["AR_HDU"] = (5, "HDU holding the PSF")
    planes = []
    for name, dtype, unit in (
        ("IMAGE", np.float32, "nJy"),
        ("MASK", np.int32, ""),
        ("VARIANCE", np.float32, "nJy**2"),
    ):
        header = _wcs_header(side)
        header["EXTTYPE"] = name
        if unit:
            header["BUNIT"] = unit
        if name == "MASK":
            for plane, bit in MASK_PLANES.items():
                header[f"HIERARCH MP_{plane}"] = bit
        planes.append(fits.ImageHDU(np.zeros((side, side), dtype), header=header, name=name))
    psf = fits.ImageHDU(np.zeros((PSF_SIDE, PSF_SIDE), np.float32), name="PSF")
    psf.header["EXTTYPE"] = "PSF"
    buffer = io.BytesIO()
    fits.HDUList([primary, *planes, psf]).writeto(buffer)
    blob = buffer.getvalue()

    with fits.open(io.BytesIO(blob)) as check:
        data_offsets = tuple(check.fileinfo(i)["datLoc"] for i in range(1, 5))
        header_offsets = [check.fileinfo(i)["hdrLoc"] for i in range(1, 4)]
    crval_offsets = []
    for start in header_offsets:
        c1 = blob.index(b"CRVAL1  =", start)
        c2 = blob.index(b"CRVAL2  =", start)
        crval_offsets.append((c1, c2))
    return _Template(blob, data_offsets, tuple(crval_offsets))  # type: ignore[arg-type]


def gaussian_psf(sigma_px: float, side: int = PSF_SIDE) -> np.ndarray:
    """A normalised circular Gaussian PSF kernel (float32)."""
    half = (side - 1) / 2.0
    y, x = np.mgrid[0:side, 0:side] - half
    kernel = np.exp(-(x * x + y * y) / (2.0 * sigma_px * sigma_px))
    return (kernel / kernel.sum()).astype(np.float32)


def crval_cards(ra: float, dec: float) -> tuple[bytes, bytes]:
    """The CRVAL1/CRVAL2 header cards of a cutout centred on (ra, dec), rendered by astropy."""
    comment = "[deg] Coordinate value at reference point"
    return (
        fits.Card("CRVAL1", ra, comment).image.encode("ascii"),
        fits.Card("CRVAL2", dec, comment).image.encode("ascii"),
    )


def render_cutout(
    image: np.ndarray,
    mask: np.ndarray,
    variance: np.ndarray,
    psf: np.ndarray,
    cards: tuple[bytes, bytes],
) -> bytes:
    """One FITS cutout (bytes) with the given planes and the WCS centre given by ``cards``."""
    side = image.shape[0]
    template = _template(side)
    out = bytearray(template.blob)
    for offset, array, dtype in zip(
        template.data_offsets,
        (image, mask, variance, psf),
        (">f4", ">i4", ">f4", ">f4"),
        strict=True,
    ):
        raw = np.ascontiguousarray(array, dtype=dtype).tobytes()
        out[offset : offset + len(raw)] = raw
    crval1, crval2 = cards
    for c1, c2 in template.crval_offsets:
        out[c1 : c1 + 80] = crval1
        out[c2 : c2 + 80] = crval2
    return bytes(out)


def simulate_cutout_triplet(
    rng: np.random.Generator,
    *,
    side: int,
    ra: float,
    dec: float,
    diff_flux_njy: float,
    template_flux_njy: float,
    sky_sigma_njy: float,
    psf_sigma_px: float,
    offset_px: tuple[float, float] = (0.0, 0.0),
) -> dict[str, bytes]:
    """Difference, science and template cutouts of one source, consistent with each other.

    The science image is the template plus the difference signal; the difference cutout holds the
    PSF-shaped transient with the combined noise; the variance plane is the noise actually drawn.
    ``sky_sigma_njy`` is the per-pixel noise of one exposure.
    """
    half = (side - 1) / 2.0
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) - np.float32(half)
    dx, dy = offset_px
    r2 = (x - dx) ** 2 + (y - dy) ** 2
    profile = np.exp(-r2 / np.float32(2.0 * psf_sigma_px * psf_sigma_px))
    profile /= np.float32(2.0 * np.pi * psf_sigma_px * psf_sigma_px)

    # Coadded templates are deeper than single exposures: ~1/3 of the noise.
    template_sigma = sky_sigma_njy / 3.0
    template_img = template_flux_njy * profile + rng.normal(0.0, template_sigma, (side, side))
    source = diff_flux_njy * profile
    science_noise = rng.normal(0.0, sky_sigma_njy, (side, side))
    science_img = template_img + source + science_noise
    diff_img = science_img - template_img + rng.normal(0.0, template_sigma, (side, side))

    science_var = np.full((side, side), sky_sigma_njy**2, np.float32) + np.abs(source) * 0.05
    template_var = np.full((side, side), template_sigma**2, np.float32)
    diff_var = science_var + template_var

    detected = np.where(r2 <= (2.0 * psf_sigma_px) ** 2, 1 << MASK_PLANES["DETECTED"], 0)
    if diff_flux_njy < 0:
        detected = np.where(detected > 0, 1 << MASK_PLANES["DETECTED_NEGATIVE"], 0)
    mask = detected.astype(np.int32)
    empty_mask = np.zeros((side, side), np.int32)
    psf = gaussian_psf(psf_sigma_px)
    cards = crval_cards(ra, dec)

    return {
        "Difference": render_cutout(diff_img, mask, diff_var, psf, cards),
        "Science": render_cutout(science_img, mask, science_var, psf, cards),
        "Template": render_cutout(template_img, empty_mask, template_var, psf, cards),
    }
