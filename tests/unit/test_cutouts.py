"""Cutouts are real FITS files laid out as Rubin's, with a WCS on the source."""

from __future__ import annotations

import io

import numpy as np
import pytest
from alertbench.refimpl.alert.cutouts import CUTOUT_KINDS
from astropy.io import fits
from astropy.wcs import WCS

pytestmark = pytest.mark.filterwarnings("error::astropy.io.fits.verify.VerifyWarning")


def _open(blob: bytes) -> fits.HDUList:
    return fits.open(io.BytesIO(blob))


def test_every_cutout_opens_with_rubin_layout_and_a_wcs_on_the_source(alerts) -> None:
    for alert in alerts:
        src = alert["diaSource"]
        for kind in CUTOUT_KINDS:
            with _open(alert[f"cutout{kind}"]) as hdus:
                hdus.verify("exception")
                assert [h.name for h in hdus] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE", "PSF"]
                image = hdus["IMAGE"]
                side = image.data.shape[0]
                assert image.data.shape == (side, side)
                assert 30 <= side <= 102
                assert hdus["MASK"].data.dtype.kind == "i"
                assert hdus["VARIANCE"].data.shape == (side, side)
                assert (hdus["VARIANCE"].data > 0).all()
                assert hdus["PSF"].data.sum() == pytest.approx(1.0, rel=1e-4)
                wcs = WCS(image.header)
                assert wcs.has_celestial
                centre = (side - 1) / 2.0  # 0-based pixel centre of the stamp
                ra, dec = wcs.pixel_to_world_values(centre, centre)
                assert float(ra) == pytest.approx(src["ra"], abs=1e-9)
                assert float(dec) == pytest.approx(src["dec"], abs=1e-9)


def test_difference_cutout_shows_a_psf_shaped_source(alerts) -> None:
    bright = max(alerts, key=lambda a: a["diaSource"]["snr"])
    with _open(bright["cutoutDifference"]) as hdus:
        data = hdus["IMAGE"].data
        side = data.shape[0]
        c = side // 2
        core = data[c - 2 : c + 3, c - 2 : c + 3].sum()
        edge = np.concatenate([data[:3].ravel(), data[-3:].ravel()])
        assert np.sign(core) == np.sign(bright["diaSource"]["psfFlux"])
        assert abs(core) > 5 * edge.std()
        assert hdus["MASK"].data[c, c] != 0  # DETECTED (or DETECTED_NEGATIVE) on the source


def test_cutout_sizes_vary_with_the_source(alerts) -> None:
    sides = set()
    for alert in alerts:
        with _open(alert["cutoutScience"]) as hdus:
            sides.add(hdus["IMAGE"].data.shape[0])
    assert 30 in sides and len(sides) > 1
