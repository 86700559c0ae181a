"""A deterministic simulator of Rubin visits and their alerts, realistic in content and size.

Why not ``lsst.alert.packet.simulate``: it fills fields with random values and no cutouts, so its
records are ~1 KB, while a Rubin alert is tens of kilobytes dominated by a year of light curve and
three FITS cutouts. Every size, rate and latency downstream depends on that difference.

The model, in short (figures and their sources are in ``schemas/alert-sizes.md``):

* A night is a :class:`VisitSchedule` of visits every ``cadence_s`` seconds. Each :class:`Visit`
  has an id (Rubin style: day_obs * 100000 + sequence), a shutter-close time, a pointing, a band,
  a seeing, and an alert count drawn from a log-normal with a configurable mean and heavy tail.
* Alerts are spread over the 189 science CCDs of the LSSTCam focal plane (15 x 15 CCD grid without
  the four corner rafts, 0.2"/px, ~3.5 deg across) with uneven densities, and come out CCD by
  CCD, as Rubin's per-detector workers emit them.
* Each alert belongs to a variable star (periodic) or a transient (a rise and fall), observed at
  the field's epochs over the last year (two visits a night, ~82 visits a year). Forced photometry
  covers every epoch since 30 days before the object was first seen; detections are the epochs at
  SNR >= 5; the triggering source is always at SNR >= 5. ``diaObject`` aggregates are computed
  from that light curve.
* Three cutouts (difference, science, template) are FITS files from :mod:`.cutouts`, 30 to
  102 px square depending on the source's footprint.

Determinism: a visit is a function of (seed, visit index) and an alert of (seed, visit index,
alert index), so any alert can be regenerated on its own and the same seed gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from alertbench.refimpl.alert.cutouts import (
    CUTOUT_KINDS,
    PIXEL_SCALE_ARCSEC,
    simulate_cutout_triplet,
)
from alertbench.refimpl.alert.records import Record, RecordBuilder
from alertbench.refimpl.alert.schema import AlertSchema, load_schema
from astropy.time import Time
from astropy.wcs import WCS

BANDS = ("u", "g", "r", "i", "z", "y")
BAND_WEIGHTS = np.array([0.07, 0.09, 0.22, 0.22, 0.20, 0.20])
"""Share of visits per band in the LSST baseline survey strategy."""
DEPTH_5SIGMA = {"u": 23.9, "g": 25.0, "r": 24.7, "i": 24.0, "z": 23.3, "y": 22.1}
"""Single-visit 5-sigma point-source depths (AB mag), LSST Science Requirements Document."""
AB_ZEROPOINT_NJY = 31.4  # m_AB = 31.4 - 2.5 log10(flux / nJy)

CCD_PIXELS = (4072, 4000)
RAFT_GRID = 5
CCDS_PER_RAFT_SIDE = 3
EXPOSURE_S = 30.0
PRECOVERY_DAYS = 30.0
DETECTION_SNR = 5.0
MAX_HISTORY_EPOCHS = 998  # source ids reserve 999 for the triggering source


@dataclass(frozen=True)
class SimulationConfig:
    """Every knob of the simulation; a run is reproducible from this and the package version."""

    seed: int = 1
    schema_version: str | None = None
    alerts_per_visit_mean: float = 10_000
    alerts_per_visit_sigma: float = 0.6
    """Log-normal sigma of the per-visit count (0 gives exactly the mean every visit)."""
    alerts_per_visit_max: int = 100_000
    """Rubin's stretch goal per visit; draws above it are clipped."""
    ccds: int = 189
    cadence_s: float = 39.0
    start_mjd: float = 61368.05
    """TAI MJD of the first shutter close (2026-11-24, early in a Chilean night)."""
    history_days: float = 365.0
    mean_days_between_nights: float = 5.8
    """Spacing of the field's nights in season: ~41 nights x 2 visits = ~82 visits a year."""
    transient_fraction: float = 0.35
    cutout_side_min: int = 30
    cutout_side_max: int = 102
    bbox_median_px: float = 18.0


def _focal_plane_ccd_origins() -> np.ndarray:
    """Lower-left corners (focal-plane pixels, centred on the boresight) of LSSTCam's 189 CCDs."""
    origins = []
    n_side = RAFT_GRID * CCDS_PER_RAFT_SIDE
    corner = {(0, 0), (0, RAFT_GRID - 1), (RAFT_GRID - 1, 0), (RAFT_GRID - 1, RAFT_GRID - 1)}
    for row in range(n_side):
        for col in range(n_side):
            if (row // CCDS_PER_RAFT_SIDE, col // CCDS_PER_RAFT_SIDE) in corner:
                continue
            origins.append(
                (
                    (col - n_side / 2) * CCD_PIXELS[0],
                    (row - n_side / 2) * CCD_PIXELS[1],
                )
            )
    return np.array(origins)


_CCD_ORIGINS = _focal_plane_ccd_origins()


@dataclass(frozen=True)
class Visit:
    """One exposure of the camera and the alerts it produces."""

    index: int
    visit_id: int
    shutter_close_mjd: float
    ra: float
    dec: float
    band: str
    seeing_fwhm_arcsec: float
    n_alerts: int
    ccd_counts: tuple[int, ...] = field(repr=False)
    simulator: AlertSimulator = field(repr=False, compare=False)

    @property
    def midpoint_mjd(self) -> float:
        return self.shutter_close_mjd - EXPOSURE_S / 2 / 86400.0

    def alerts(self, limit: int | None = None) -> Iterator[Record]:
        """The visit's alerts, CCD by CCD, generated lazily (a visit is ~1 GB in memory)."""
        n = self.n_alerts if limit is None else min(limit, self.n_alerts)
        for i in range(n):
            yield self.simulator.alert(self, i)

    @cached_property
    def _positions(self) -> dict[str, np.ndarray]:
        return self.simulator.positions(self)


class AlertSimulator:
    """Makes visits and alerts for one schema version and seed."""

    def __init__(self, config: SimulationConfig | None = None) -> None:
        self.config = config or SimulationConfig()
        self.schema: AlertSchema = load_schema(self.config.schema_version)
        self._alert = RecordBuilder(self.schema.definition)
        self._builders: dict[str, RecordBuilder] = {}
        for name in ("diaSource", "diaForcedSource", "diaObject"):
            try:
                self._builders[name] = RecordBuilder(self.schema.record(name))
            except Exception:  # older schema versions lack some records
                continue
        self._day_obs = int(Time(self.config.start_mjd - 0.5, format="mjd").strftime("%Y%m%d"))

    # -- visits ---------------------------------------------------------------------------------

    def visit(self, index: int) -> Visit:
        cfg = self.config
        rng = np.random.default_rng((cfg.seed, index, 0xFFFF_FFFF))
        if cfg.alerts_per_visit_sigma > 0:
            sigma = cfg.alerts_per_visit_sigma
            mu = math.log(cfg.alerts_per_visit_mean) - sigma * sigma / 2.0
            n = round(rng.lognormal(mu, sigma))
        else:
            n = round(cfg.alerts_per_visit_mean)
        n = max(1, min(n, cfg.alerts_per_visit_max))
        weights = rng.dirichlet(np.full(cfg.ccds, 5.0))
        ccd_counts = tuple(int(c) for c in rng.multinomial(n, weights))
        # Pointings uniform on the sphere over Rubin's declination range.
        sin_dec = rng.uniform(math.sin(math.radians(-80.0)), math.sin(math.radians(25.0)))
        return Visit(
            index=index,
            visit_id=self._day_obs * 100_000 + index + 1,
            shutter_close_mjd=cfg.start_mjd + index * cfg.cadence_s / 86400.0,
            ra=float(rng.uniform(0.0, 360.0)),
            dec=math.degrees(math.asin(sin_dec)),
            band=str(rng.choice(BANDS, p=BAND_WEIGHTS)),
            seeing_fwhm_arcsec=float(np.clip(rng.lognormal(math.log(0.75), 0.2), 0.45, 2.0)),
            n_alerts=n,
            ccd_counts=ccd_counts,
            simulator=self,
        )

    def positions(self, visit: Visit) -> dict[str, np.ndarray]:
        """Detector, pixel and sky coordinates of every alert of a visit, in CCD order, in batch."""
        rng = np.random.default_rng((self.config.seed, visit.index, 0xFFFF_FFFE))
        counts = np.array(visit.ccd_counts)
        detector = np.repeat(np.arange(len(counts)), counts)
        x = rng.uniform(0, CCD_PIXELS[0], detector.size)
        y = rng.uniform(0, CCD_PIXELS[1], detector.size)
        origins = _CCD_ORIGINS[detector % len(_CCD_ORIGINS)]
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crpix = [0.0, 0.0]
        wcs.wcs.crval = [visit.ra, visit.dec]
        scale = PIXEL_SCALE_ARCSEC / 3600.0
        wcs.wcs.cd = np.array([[-scale, 0.0], [0.0, scale]])
        ra, dec = wcs.wcs_pix2world(origins[:, 0] + x, origins[:, 1] + y, 0)
        return {"detector": detector, "x": x, "y": y, "ra": ra % 360.0, "dec": dec}

    def visits(self, count: int, start: int = 0) -> Iterator[Visit]:
        for index in range(start, start + count):
            yield self.visit(index)

    # -- alerts ---------------------------------------------------------------------------------

    def object_id(self, visit: Visit, i: int) -> int:
        # 200,000 slots per visit leave room above Rubin's 100,000 stretch goal.
        return 10**12 + visit.index * 200_000 + i

    def alert(self, visit: Visit, i: int) -> Record:
        """Alert ``i`` of ``visit``: a pure function of (seed, visit index, i)."""
        cfg = self.config
        rng = np.random.default_rng((cfg.seed, visit.index, i))
        pos = visit._positions
        obj = _LightCurveModel.draw(rng, cfg, visit)
        object_id = self.object_id(visit, i)
        ra0, dec0 = float(pos["ra"][i]), float(pos["dec"][i])
        psf_sigma_px = visit.seeing_fwhm_arcsec / 2.355 / PIXEL_SCALE_ARCSEC

        # The triggering detection.
        err_now = obj.error(visit.band, obj.template_flux + obj.flux_now, rng)
        snr_now = min(DETECTION_SNR * (1.0 - rng.uniform()) ** (-1.0 / 1.5), 2000.0)
        flux_now = math.copysign(snr_now * err_now, obj.sign)
        obj.anchor(flux_now)
        bbox = int(np.clip(rng.lognormal(math.log(cfg.bbox_median_px), 0.6), 8, 200))
        source = self._dia_source(
            rng,
            source_id=object_id * 1000 + 999,
            object_id=object_id,
            visit_id=visit.visit_id,
            detector=int(pos["detector"][i]),
            x=float(pos["x"][i]),
            y=float(pos["y"][i]),
            ra=ra0,
            dec=dec0,
            mjd=visit.midpoint_mjd,
            band=visit.band,
            flux=flux_now,
            flux_err=err_now,
            template_flux=obj.template_flux,
            seeing_arcsec=visit.seeing_fwhm_arcsec,
            bbox=bbox,
        )

        # The last year at this position: forced photometry and detections.
        forced: list[Record] = []
        previous: list[Record] = []
        for j, (mjd, band, seeing) in enumerate(obj.epochs):
            err = obj.error(band, obj.template_flux + obj.model(mjd), rng)
            flux = obj.model(mjd) + rng.normal(0.0, err)
            epoch_visit = self._past_visit_id(mjd, j)
            ra_j = ra0 + rng.normal(0.0, 0.05 / 3600.0)
            dec_j = dec0 + rng.normal(0.0, 0.05 / 3600.0)
            if mjd >= obj.first_seen_mjd - PRECOVERY_DAYS:
                forced.append(
                    self._forced_source(
                        rng,
                        source_id=object_id * 1000 + j,
                        object_id=object_id,
                        visit_id=epoch_visit,
                        ra=ra0,
                        dec=dec0,
                        mjd=mjd,
                        band=band,
                        flux=flux,
                        flux_err=err,
                        template_flux=obj.template_flux,
                    )
                )
            if abs(flux) / err >= DETECTION_SNR:
                previous.append(
                    self._dia_source(
                        rng,
                        source_id=object_id * 1000 + j,
                        object_id=object_id,
                        visit_id=epoch_visit,
                        detector=int(rng.integers(0, cfg.ccds)),
                        x=float(rng.uniform(0, CCD_PIXELS[0])),
                        y=float(rng.uniform(0, CCD_PIXELS[1])),
                        ra=ra_j,
                        dec=dec_j,
                        mjd=mjd,
                        band=band,
                        flux=flux,
                        flux_err=err,
                        template_flux=obj.template_flux,
                        seeing_arcsec=seeing,
                        bbox=int(np.clip(bbox + rng.integers(-3, 4), 8, 200)),
                    )
                )

        dia_object = self._dia_object(rng, object_id, visit, [*previous, source], forced)

        side = int(np.clip(bbox, cfg.cutout_side_min, cfg.cutout_side_max))
        sky_sigma = err_now / math.sqrt(4.0 * math.pi * psf_sigma_px * psf_sigma_px)
        cutouts = simulate_cutout_triplet(
            rng,
            side=side,
            ra=ra0,
            dec=dec0,
            diff_flux_njy=flux_now,
            template_flux_njy=obj.template_flux,
            sky_sigma_njy=sky_sigma,
            psf_sigma_px=psf_sigma_px,
            offset_px=(float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.5, 0.5))),
        )
        values: Record = {
            "diaSourceId": source["diaSourceId"],
            "alertId": source["diaSourceId"],
            "observation_reason": "wfd",
            "target_name": f"wfd_{visit.band}",
            "diaSource": source,
            "prvDiaSources": previous,
            "prvDiaForcedSources": forced,
            "diaObject": dia_object,
            "ssSource": None,
            "mpc_orbits": None,
        }
        for kind in CUTOUT_KINDS:
            values[f"cutout{kind}"] = cutouts[kind]
        return self._alert.build(values, rng)

    def _past_visit_id(self, mjd: float, j: int) -> int:
        # Past visits are numbered relative to the night: days before times 100000 keeps them
        # distinct from tonight's visit ids and from each other.
        days_before = round(self.config.start_mjd - mjd)
        return (self._day_obs - days_before) * 100_000 + 50_000 + j

    def _dia_source(
        self,
        rng: np.random.Generator,
        *,
        source_id: int,
        object_id: int,
        visit_id: int,
        detector: int,
        x: float,
        y: float,
        ra: float,
        dec: float,
        mjd: float,
        band: str,
        flux: float,
        flux_err: float,
        template_flux: float,
        seeing_arcsec: float,
        bbox: int,
    ) -> Record:
        builder = self._builders.get("diaSource")
        if builder is None:
            return {}
        snr = abs(flux) / flux_err
        pos_err_deg = seeing_arcsec / 2.355 / max(snr, 1.0) / 3600.0
        psf_sigma_px = seeing_arcsec / 2.355 / PIXEL_SCALE_ARCSEC
        moment = psf_sigma_px * psf_sigma_px
        template_err = flux_err / 3.0
        values: Record = {
            "diaSourceId": source_id,
            "visit": visit_id,
            "detector": detector,
            "diaObjectId": object_id,
            "ssObjectId": None,
            "parentDiaSourceId": None,
            "midpointMjdTai": mjd,
            "exposureTime": EXPOSURE_S,
            "ra": ra,
            "raErr": pos_err_deg,
            "dec": dec,
            "decErr": pos_err_deg,
            "ra_dec_Cov": 0.0,
            "x": x,
            "xErr": pos_err_deg * 3600.0 / PIXEL_SCALE_ARCSEC,
            "y": y,
            "yErr": pos_err_deg * 3600.0 / PIXEL_SCALE_ARCSEC,
            "centroid_flag": False,
            "apFlux": flux * 0.97 + rng.normal(0.0, flux_err * 0.3),
            "apFluxErr": flux_err * 1.1,
            "isNegative": flux < 0,
            "snr": snr,
            "psfFlux": flux,
            "psfFluxErr": flux_err,
            "psfLnL": -0.5 * rng.chisquare(psf_sigma_px * 20),
            "psfChi2": rng.chisquare(max(1, int(moment * 12))),
            "psfNdata": max(1, int(moment * 12)),
            "trailFlux": flux * 1.01,
            "trailFluxErr": flux_err * 1.2,
            "trailRa": ra,
            "trailRaErr": pos_err_deg * 1.5,
            "trailDec": dec,
            "trailDecErr": pos_err_deg * 1.5,
            "trailLength": abs(rng.normal(0.0, 0.3)),
            "trailLengthErr": 0.2,
            "trailAngle": rng.uniform(-math.pi, math.pi),
            "trailAngleErr": 0.5,
            "trailChi2": rng.chisquare(max(1, int(moment * 12))),
            "trailNdata": max(1, int(moment * 12)),
            "trailAlgorithm": 1,
            "dipoleMeanFlux": flux * 0.5,
            "dipoleMeanFluxErr": flux_err,
            "dipoleFluxDiff": rng.normal(0.0, flux_err),
            "dipoleFluxDiffErr": flux_err * 1.4,
            "dipoleLength": abs(rng.normal(0.0, 0.5)),
            "dipoleAngle": rng.uniform(-math.pi, math.pi),
            "dipoleChi2": rng.chisquare(max(1, int(moment * 12))),
            "dipoleNdata": max(1, int(moment * 12)),
            "scienceFlux": template_flux + flux,
            "scienceFluxErr": math.hypot(flux_err, template_err),
            "templateFlux": template_flux,
            "templateFluxErr": template_err,
            "ixx": moment,
            "iyy": moment,
            "ixy": 0.0,
            "ixxPSF": moment,
            "iyyPSF": moment,
            "ixyPSF": 0.0,
            "extendedness": float(rng.uniform(0.0, 0.2)),
            "reliability": float(rng.beta(8, 2)),
            "reliabilityVersion": "alertbench-rb-1",
            "band": band,
            "isDipole": False,
            "dipoleFitAttempted": True,
            "timeProcessedMjdTai": mjd + rng.uniform(40.0, 55.0) / 86400.0,
            "timeWithdrawnMjdTai": None,
            "bboxSize": bbox,
        }
        return builder.build(values, rng)

    def _forced_source(
        self,
        rng: np.random.Generator,
        *,
        source_id: int,
        object_id: int,
        visit_id: int,
        ra: float,
        dec: float,
        mjd: float,
        band: str,
        flux: float,
        flux_err: float,
        template_flux: float,
    ) -> Record:
        builder = self._builders.get("diaForcedSource")
        if builder is None:
            return {}
        values: Record = {
            "diaForcedSourceId": source_id,
            "diaObjectId": object_id,
            "ra": ra,
            "dec": dec,
            "visit": visit_id,
            "detector": int(rng.integers(0, self.config.ccds)),
            "psfFlux": flux,
            "psfFluxErr": flux_err,
            "midpointMjdTai": mjd,
            "scienceFlux": template_flux + flux,
            "scienceFluxErr": math.hypot(flux_err, flux_err / 3.0),
            "band": band,
            "timeProcessedMjdTai": mjd + rng.uniform(40.0, 55.0) / 86400.0,
            "timeWithdrawnMjdTai": None,
        }
        return builder.build(values, rng)

    def _dia_object(
        self,
        rng: np.random.Generator,
        object_id: int,
        visit: Visit,
        detections: list[Record],
        forced: list[Record],
    ) -> Record | None:
        builder = self._builders.get("diaObject")
        if builder is None:
            return None
        values: Record = {
            "diaObjectId": object_id,
            "validityStartMjdTai": visit.midpoint_mjd,
            "nDiaSources": len(detections),
        }
        values.update(dia_object_aggregates(detections, forced))
        return builder.build(values, rng)


_AGGREGATE_INPUTS = frozenset(
    {"ra", "dec", "raErr", "decErr", "midpointMjdTai", "band", "psfFlux", "psfFluxErr"}
)
_FORCED_INPUTS = frozenset({"band", "psfFlux", "psfFluxErr", "scienceFlux", "scienceFluxErr"})


def dia_object_aggregates(detections: list[Record], forced: list[Record]) -> Record:
    """The light-curve statistics of a ``diaObject``, computed from its sources.

    Used by the simulator to fill the record and by the tests to check it, so both read the same
    definitions: per-band means, errors of the mean, scatter, extrema, the steepest slope between
    consecutive detections, and forced-photometry means.
    """
    out: Record = {}
    if not detections or not _AGGREGATE_INPUTS.issubset(detections[0]):
        return out  # an old schema version with other names: left to the generic fill
    ras = np.array([d["ra"] for d in detections])
    decs = np.array([d["dec"] for d in detections])
    out["ra"] = float(np.mean(ras))
    out["dec"] = float(np.mean(decs))
    n = len(detections)
    out["raErr"] = float(np.std(ras) / math.sqrt(n)) if n > 1 else detections[0]["raErr"]
    out["decErr"] = float(np.std(decs) / math.sqrt(n)) if n > 1 else detections[0]["decErr"]
    out["ra_dec_Cov"] = 0.0
    mjds = [d["midpointMjdTai"] for d in detections]
    out["firstDiaSourceMjdTai"] = min(mjds)
    out["lastDiaSourceMjdTai"] = max(mjds)
    for band in BANDS:
        in_band = sorted(
            (d for d in detections if d["band"] == band), key=lambda d: d["midpointMjdTai"]
        )
        flux = np.array([d["psfFlux"] for d in in_band])
        err = np.array([d["psfFluxErr"] for d in in_band])
        k = len(in_band)
        out[f"{band}_psfFluxNdata"] = k
        if k:
            out[f"{band}_psfFluxMean"] = float(flux.mean())
            out[f"{band}_psfFluxMeanErr"] = float(math.sqrt(float(np.sum(err * err))) / k)
            out[f"{band}_psfFluxSigma"] = float(flux.std(ddof=1)) if k > 1 else None
            out[f"{band}_psfFluxMin"] = float(flux.min())
            out[f"{band}_psfFluxMax"] = float(flux.max())
            out[f"{band}_psfFluxErrMean"] = float(err.mean())
            if k > 1:
                t = np.array([d["midpointMjdTai"] for d in in_band])
                dt = np.diff(t)
                slopes = np.abs(np.diff(flux)[dt > 0] / dt[dt > 0])
                out[f"{band}_psfFluxMaxSlope"] = float(slopes.max()) if slopes.size else None
            else:
                out[f"{band}_psfFluxMaxSlope"] = None
        else:
            for stat in ("Mean", "MeanErr", "Sigma", "Min", "Max", "ErrMean", "MaxSlope"):
                out[f"{band}_psfFlux{stat}"] = None
        f_band = [f for f in forced if _FORCED_INPUTS.issubset(f) and f["band"] == band]
        if f_band:
            fp = np.array([f["psfFlux"] for f in f_band])
            fe = np.array([f["psfFluxErr"] for f in f_band])
            sf = np.array([f["scienceFlux"] for f in f_band])
            se = np.array([f["scienceFluxErr"] for f in f_band])
            out[f"{band}_fpFluxMean"] = float(fp.mean())
            out[f"{band}_fpFluxMeanErr"] = float(math.sqrt(float(np.sum(fe * fe))) / len(f_band))
            out[f"{band}_scienceFluxMean"] = float(sf.mean())
            out[f"{band}_scienceFluxMeanErr"] = float(math.sqrt(float(np.sum(se * se))) / len(sf))
        else:
            for name in ("fpFluxMean", "fpFluxMeanErr", "scienceFluxMean", "scienceFluxMeanErr"):
                out[f"{band}_{name}"] = None
    return out


@dataclass
class _LightCurveModel:
    """The flux history of one object: a periodic variable or a transient, in difference flux."""

    kind: str
    sign: float
    template_flux: float
    now_mjd: float
    first_seen_mjd: float
    epochs: list[tuple[float, str, float]]
    period: float = 1.0
    phase: float = 0.0
    peak_mjd: float = 0.0
    width: float = 10.0
    amplitude: float = 1.0
    flux_now: float = 0.0
    seeing_now: float = 0.75

    @classmethod
    def draw(
        cls, rng: np.random.Generator, cfg: SimulationConfig, visit: Visit
    ) -> _LightCurveModel:
        now = visit.midpoint_mjd
        epochs = _field_epochs(rng, cfg, now)
        if rng.uniform() < cfg.transient_fraction:
            width = float(rng.uniform(5.0, 30.0))
            peak = now + float(rng.uniform(-1.5, 0.5)) * width
            first_seen = peak - 2.0 * width
            model = cls(
                kind="transient",
                sign=1.0,
                template_flux=float(10 ** rng.uniform(2.0, 4.5)),
                now_mjd=now,
                first_seen_mjd=first_seen,
                epochs=[e for e in epochs if e[0] >= first_seen - PRECOVERY_DAYS],
                peak_mjd=peak,
                width=width,
            )
        else:
            period = float(10 ** rng.uniform(-0.5, 2.5))
            shape_now = float(rng.uniform(0.5, 1.0))
            sign = 1.0 if rng.uniform() < 0.5 else -1.0
            phase = math.asin(shape_now) - 2.0 * math.pi * now / period
            model = cls(
                kind="variable",
                sign=sign,
                template_flux=float(10 ** rng.uniform(3.0, 6.0)),
                now_mjd=now,
                first_seen_mjd=now - cfg.history_days,
                epochs=epochs,
                period=period,
                phase=phase,
            )
        model.epochs = model.epochs[-MAX_HISTORY_EPOCHS:]
        model.seeing_now = visit.seeing_fwhm_arcsec
        return model

    def shape(self, mjd: float) -> float:
        if self.kind == "transient":
            return math.exp(-((mjd - self.peak_mjd) ** 2) / (2.0 * self.width * self.width))
        return math.sin(2.0 * math.pi * mjd / self.period + self.phase)

    def anchor(self, flux_now: float) -> None:
        """Scale the model so that it passes through the triggering detection's flux."""
        self.amplitude = flux_now / self.shape(self.now_mjd)
        self.flux_now = flux_now

    def model(self, mjd: float) -> float:
        return self.amplitude * self.shape(mjd)

    @staticmethod
    def error(band: str, science_flux: float, rng: np.random.Generator) -> float:
        """Flux error (nJy) of a point source: sky-limited at the band's depth plus source noise."""
        sky = 10 ** ((AB_ZEROPOINT_NJY - DEPTH_5SIGMA[band]) / 2.5) / 5.0
        sky *= float(rng.uniform(0.8, 1.4))  # seeing and sky brightness vary visit to visit
        return math.sqrt(sky * sky + 0.02 * abs(science_flux) * 50.0)


def _field_epochs(
    rng: np.random.Generator, cfg: SimulationConfig, now: float
) -> list[tuple[float, str, float]]:
    """(midpoint MJD, band, seeing) of the field's visits in the last year, two per night."""
    # The field is observable ~8 months a year, and tonight falls somewhere in its season.
    season = 240.0
    season_start = now - float(rng.uniform(0.0, season))
    step = cfg.mean_days_between_nights
    max_nights = int(cfg.history_days / 0.5) + 1
    gaps = 0.5 + rng.exponential(step - 0.5, max_nights)
    nights = now - np.cumsum(gaps)
    nights = nights[nights > now - cfg.history_days]
    nights = nights[(nights - season_start) % 365.25 < season]
    times = np.sort(np.concatenate([nights, nights + 0.022]))
    bands = rng.choice(len(BANDS), size=times.size, p=BAND_WEIGHTS).tolist()
    seeing = np.clip(rng.lognormal(math.log(0.75), 0.2, times.size), 0.45, 2.0).tolist()
    return [(t, BANDS[b], s) for t, b, s in zip(times.tolist(), bands, seeing, strict=True)]
