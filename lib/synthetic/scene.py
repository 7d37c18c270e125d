"""A seeded renderer of short street-scene videos with exact labels and backward flow (docs/data.md).

Each snippet is a 2.5D street ray-cast from a moving pinhole camera: road, sidewalks, facades at two depths with
gaps, fences, trees, poles with signs, moving cars and walking pedestrians.  Every surface's colour is a function of
its own coordinates and every pixel's surface point is known, so labels and flow are exact by construction."""
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from lib.dataset.io import IGNORE_INDEX

# Cityscapes train ids of the classes the scenes use.
ROAD, SIDEWALK, BUILDING, FENCE, POLE, SIGN, VEGETATION, SKY, PERSON, CAR = 0, 1, 2, 4, 5, 7, 8, 10, 11, 13
USED_CLASSES = (ROAD, SIDEWALK, BUILDING, FENCE, POLE, SIGN, VEGETATION, SKY, PERSON, CAR)
CITIES = {'train': ('synthtown', 'synthville'), 'val': ('synthberg',), 'test': ('synthdorf',)}
_SPLIT_CODES = {'train': 0, 'val': 1, 'test': 2}
NEAR = 0.3  # metres; surfaces closer to the camera are not drawn
FAR = 150.0  # metres; billboards beyond are skipped (they would be under a pixel)
CAMERA_HEIGHT = 1.4


@dataclass(frozen=True)
class Difficulty:
    """How hard the video is for propagation; all speeds in metres per frame (Cityscapes runs at 17 fps)."""
    ego_speed: tuple = (0.45, 0.8)
    sway: float = 0.25  # lateral camera sway amplitude (m)
    yaw: float = 2.0  # yaw oscillation amplitude (degrees)
    pitch: float = 0.4  # pitch jitter amplitude (degrees)
    n_cars: tuple = (4, 8)  # moving cars per snippet (parked cars come on top)
    car_speed: tuple = (0.3, 0.9)
    n_people: tuple = (5, 9)
    walk_speed: tuple = (0.05, 0.12)
    light: float = 0.08  # amplitude of the global lighting drift (relative gain)
    noise: float = 0.02  # sensor noise standard deviation (on [0, 1] intensities)
    focal: float = 0.8  # focal length in image widths: longer = narrower view, bigger objects and image motion


DIFFICULTIES = {
    'easy': Difficulty(ego_speed=(0.25, 0.45), sway=0.1, yaw=1.0, pitch=0.2, n_cars=(2, 4), car_speed=(0.2, 0.5),
                       n_people=(2, 4), light=0.03, noise=0.01),
    'medium': Difficulty(),
    'hard': Difficulty(ego_speed=(0.7, 1.1), sway=0.4, yaw=3.5, pitch=0.8, n_cars=(6, 10), car_speed=(0.5, 1.2),
                       n_people=(6, 10), walk_speed=(0.08, 0.16), light=0.15, noise=0.03),
    # Propagation loses about what it loses on Cityscapes (12% at d = 9) at 128x256 through the demo's lens: 'medium'
    # slowed down, since a logit cell is 4 pixels wide at this size (docs/demo.md: calibration).
    'cityscapes-like': Difficulty(ego_speed=(0.036, 0.064), sway=0.0075, yaw=0.06, pitch=0.012, n_cars=(2, 4),
                                  car_speed=(0.024, 0.072), n_people=(2, 4), walk_speed=(0.004, 0.0096), focal=1.6),
}


def _rotation(yaw, pitch):
    """Camera-to-world rotation: yaw about the vertical axis, then pitch about the camera's x axis."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    return ry @ rx


@dataclass
class Camera:
    """Pinhole camera in world coordinates (x right, y down, z forward; the ground is the plane y = 1.4)."""
    focal: float
    cx: float
    cy: float
    position: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3) camera -> world

    def rays(self, us, vs):
        """World directions of pixels ``(us, vs)`` scaled so that the camera-space depth of ``C + t d`` is t."""
        x = (us - self.cx) / self.focal
        y = (vs - self.cy) / self.focal
        r = self.rotation
        return (r[0, 0] * x + r[0, 1] * y + r[0, 2],
                r[1, 0] * x + r[1, 1] * y + r[1, 2],
                r[2, 0] * x + r[2, 1] * y + r[2, 2])

    def project(self, x, y, z, at_infinity=False):
        """Pixel coordinates ``(u, v, depth)`` of world points (or of directions if ``at_infinity``)."""
        if not at_infinity:
            x, y, z = x - self.position[0], y - self.position[1], z - self.position[2]
        r = self.rotation  # world -> camera is r.T
        qx = r[0, 0] * x + r[1, 0] * y + r[2, 0] * z
        qy = r[0, 1] * x + r[1, 1] * y + r[2, 1] * z
        qz = r[0, 2] * x + r[1, 2] * y + r[2, 2] * z
        safe = np.where(qz > 1e-6, qz, 1e-6)
        return self.focal * qx / safe + self.cx, self.focal * qy / safe + self.cy, qz


# Textures: fixed functions of surface coordinates, so a surface point keeps its colour from frame to frame.
def _random_waves(rng, n, freq_range):
    """``n`` plane waves ``(fx, fy, phase, amplitude)`` with frequencies in cycles per metre."""
    freq = rng.uniform(*freq_range, size=n)
    angle = rng.uniform(0, np.pi, size=n)
    return np.stack([freq * np.cos(angle) * 2 * np.pi, freq * np.sin(angle) * 2 * np.pi,
                     rng.uniform(0, 2 * np.pi, size=n), rng.uniform(0.5, 1.0, size=n) / n], axis=1)


def _waves(waves, s, t):
    """Sum of plane waves at surface coordinates ``(s, t)``; roughly in [-1, 1]."""
    out = np.zeros_like(s)
    for fx, fy, phase, amp in waves:
        out += amp * np.sin(fx * s + fy * t + phase)
    return out


def _fade(depth, scale=25.0):
    """Texture contrast falls with distance: fine detail far away would alias (a cheap stand-in for mipmaps)."""
    return 1.0 / (1.0 + depth / scale)


def _shade(base, texture, contrast):
    """``base`` RGB (3,) or (n, 3) brightened/darkened by ``texture`` (n,) times ``contrast``."""
    return np.clip(np.asarray(base, dtype=np.float64) / 255.0 * (1.0 + contrast * texture)[:, None], 0.0, 1.0)


class FrameBuffer:
    """Colour, label, surface id and previous-frame position of the nearest surface at each pixel."""

    def __init__(self, height, width):
        self.depth = np.full((height, width), np.inf)
        self.rgb = np.zeros((height, width, 3))
        self.label = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
        self.surface = np.zeros((height, width), dtype=np.int32)
        self.prev_u = np.zeros((height, width))
        self.prev_v = np.zeros((height, width))

    def paint(self, region, hit, depth, rgb, label, surface, prev_u, prev_v):
        """Write the hit pixels of ``region`` (a pair of slices) that are nearer than what is there; ``hit`` and
        ``depth`` have the region's shape, the other arrays one value per hit pixel (or a scalar)."""
        nearer = np.zeros_like(hit)
        nearer[hit] = depth[hit] < self.depth[region][hit]
        keep = nearer[hit]  # which of the per-hit values survive the depth test
        for buffer, values in ((self.depth, depth[hit]), (self.rgb, rgb), (self.label, label),
                               (self.surface, surface), (self.prev_u, prev_u), (self.prev_v, prev_v)):
            buffer[region][nearer] = values[keep] if np.ndim(values) else values  # buffer[region] is a view


@dataclass
class FacadeRow:
    """A vertical plane ``x = x0`` split along z into segments: buildings, hedges or gaps."""
    x0: float
    starts: np.ndarray  # (n,) segment start z, increasing
    ends: np.ndarray
    heights: np.ndarray  # metres above ground; 0 = gap
    kinds: np.ndarray  # BUILDING or VEGETATION
    colours: np.ndarray  # (n, 3)
    surface: int
    waves: np.ndarray

    def draw(self, buffer, cam, prev_cam, grid, ctx):
        t, px, py, pz, seg, height, inside = _side_plane_points(self.x0, self.starts, self.ends, cam, grid)
        hit = inside & (height < self.heights[seg])
        if not hit.any():
            return
        z, h, s, d = pz[hit], height[hit], seg[hit], t[hit]
        kind = self.kinds[s]
        texture = _waves(self.waves, z, h) * _fade(d)
        rgb = _shade(self.colours[s], texture, 0.25)
        # Windows: a grid of dark panes on the upper floors of buildings.
        local_z = z - self.starts[s]
        pane = (kind == BUILDING) & (h > 2.5) & (np.mod(local_z, 3.0) > 0.9) & (np.mod(local_z, 3.0) < 2.2) & \
               (np.mod(h, 3.2) > 1.0) & (np.mod(h, 3.2) < 2.3) & (h < self.heights[s] - 0.8)
        rgb[pane] = np.array([0.22, 0.26, 0.34]) + 0.08 * texture[pane, None]
        label = np.where(kind == BUILDING, BUILDING, VEGETATION).astype(np.uint8)
        u, v, _ = prev_cam.project(px[hit], py[hit], pz[hit])
        buffer.paint(grid['all'], hit, t, rgb, label, self.surface, u, v)


@dataclass
class Fence:
    """A low fence of thin vertical slats in the plane ``x = x0``, present on z-intervals."""
    x0: float
    starts: np.ndarray
    ends: np.ndarray
    colour: tuple
    surface: int

    def draw(self, buffer, cam, prev_cam, grid, ctx):
        t, px, py, pz, seg, height, inside = _side_plane_points(self.x0, self.starts, self.ends, cam, grid)
        on_part = (np.mod(pz, 0.4) < 0.14) | ((height > 1.05) & (height < 1.2)) | ((height > 0.2) & (height < 0.32))
        hit = inside & (height < 1.2) & on_part
        if not hit.any():
            return
        rgb = _shade(self.colour, np.sin(pz[hit] * 9.0) * 0.5, 0.2)
        u, v, _ = prev_cam.project(px[hit], py[hit], pz[hit])
        buffer.paint(grid['all'], hit, t, rgb, FENCE, self.surface, u, v)


class Billboard:
    """An upright object on the plane ``z = z0 + vz * frame`` facing the camera, at lateral offset ``x0 + vx * frame``.
    Subclasses define ``extent`` (a_min, a_max, b_max: local metres, a lateral, b height above ground) and
    ``shade(a, b, frame) -> (hit, rgb, label, part, a_prev, b_prev)``, ``(a_prev, b_prev)`` being the hit points'
    local coordinates one frame earlier (other than ``(a, b)`` only for moving limbs)."""
    surface = 0
    vx = vz = 0.0

    def pose(self, frame):
        return self.x0 + self.vx * frame, self.z0 + self.vz * frame

    def draw(self, buffer, cam, prev_cam, grid, ctx):
        x_now, z_now = self.pose(ctx['frame'])
        if not NEAR < z_now - cam.position[2] < FAR:
            return
        region = self._screen_region(cam, x_now, z_now, grid['shape'])
        if region is None:
            return
        dx, dy, dz = (r[region] for r in grid['rays'])
        t = (z_now - cam.position[2]) / dz
        a = cam.position[0] + t * dx - x_now
        b = CAMERA_HEIGHT - (cam.position[1] + t * dy)
        front = t > NEAR
        hit, rgb, label, part, a_prev, b_prev = self.shade(a[front], b[front], ctx['frame'])
        if not hit.any():
            return
        x_prev, z_prev = self.pose(ctx['frame'] - 1)
        u, v, _ = prev_cam.project(x_prev + a_prev, CAMERA_HEIGHT - b_prev, np.full_like(a_prev, z_prev))
        full_hit = np.zeros_like(front)
        full_hit[front] = hit
        buffer.paint(region, full_hit, t, rgb, label, self.surface + part, u, v)

    def _screen_region(self, cam, x_now, z_now, shape):
        """Slices of the image rows/columns the object can cover (None if it is outside the image)."""
        a_min, a_max, b_max = self.extent
        xs = np.array([a_min, a_max, a_min, a_max]) + x_now
        ys = CAMERA_HEIGHT - np.array([0.0, 0.0, b_max, b_max])
        u, v, depth = cam.project(xs, ys, np.full(4, z_now))
        height, width = shape
        if (depth <= NEAR).any():
            return (slice(0, height), slice(0, width))
        u0, u1 = int(max(math.floor(u.min()) - 1, 0)), int(min(math.ceil(u.max()) + 2, width))
        v0, v1 = int(max(math.floor(v.min()) - 1, 0)), int(min(math.ceil(v.max()) + 2, height))
        if u0 >= u1 or v0 >= v1:
            return None
        return (slice(v0, v1), slice(u0, u1))


def _box(a, b, a0, a1, b0, b1):
    return (a >= a0) & (a < a1) & (b >= b0) & (b < b1)


def _ellipse(a, b, ca, cb, ra, rb):
    return ((a - ca) / ra) ** 2 + ((b - cb) / rb) ** 2 < 1.0


class Tree(Billboard):
    def __init__(self, rng, x0, z0, surface):
        self.x0, self.z0, self.surface = x0, z0, surface
        self.height = rng.uniform(4.0, 7.5)
        self.crown = rng.uniform(1.2, 2.2)
        self.colour = np.array([rng.uniform(40, 80), rng.uniform(95, 150), rng.uniform(25, 55)])
        self.waves = _random_waves(rng, 4, (1.0, 3.0))
        self.extent = (-self.crown, self.crown, self.height + 0.1)

    def shade(self, a, b, frame):
        crown_centre = self.height - self.crown * 0.9
        leafy = _waves(self.waves, a, b)
        crown = _ellipse(a, b, 0.0, crown_centre, self.crown * (1.0 + 0.08 * leafy), self.crown * 0.95)
        trunk = _box(a, b, -0.14, 0.14, 0.0, crown_centre)
        hit = crown | trunk
        rgb = np.where(crown[hit, None], _shade(self.colour, leafy[hit], 0.45), _shade((95, 70, 45), leafy[hit], 0.2))
        return hit, rgb, VEGETATION, 0, a[hit], b[hit]


class Pole(Billboard):
    """A thin pole with a traffic sign on top (pole and sign are different classes)."""
    SIGN_COLOURS = ((230, 200, 20), (30, 80, 190), (200, 30, 30), (240, 240, 240))

    def __init__(self, rng, x0, z0, surface):
        self.x0, self.z0, self.surface = x0, z0, surface
        self.height = rng.uniform(3.5, 5.5)
        self.width = rng.uniform(0.18, 0.28)
        self.sign = rng.uniform(0.7, 1.0)
        self.sign_colour = self.SIGN_COLOURS[rng.integers(len(self.SIGN_COLOURS))]
        self.round_sign = bool(rng.integers(2))
        self.extent = (-self.sign / 2, self.sign / 2, self.height + 0.1)

    def shade(self, a, b, frame):
        half = self.sign / 2
        centre = self.height - half
        sign = (_ellipse(a, b, 0.0, centre, half, half) if self.round_sign
                else _box(a, b, -half, half, centre - half, centre + half))
        pole = _box(a, b, -self.width / 2, self.width / 2, 0.0, self.height - 0.1) & ~sign
        hit = sign | pole
        border = sign & ((np.abs(a) > half * 0.75) | (np.abs(b - centre) > half * 0.75))
        rgb = np.where(sign[hit, None], np.asarray(self.sign_colour) / 255.0, np.array([0.62, 0.62, 0.65]))
        rgb = np.where(border[hit, None], np.array([0.95, 0.95, 0.95]), rgb)
        rgb = rgb * (1.0 + 0.15 * np.cos(a[hit] / self.width * np.pi))[:, None] * 0.9  # a rounded metal look
        label = np.where(sign[hit], SIGN, POLE).astype(np.uint8)
        return hit, np.clip(rgb, 0, 1), label, sign[hit].astype(np.int32), a[hit], b[hit]


class Car(Billboard):
    """The back (or front) view of a car moving with constant velocity ``(vx, vz)``."""
    COLOURS = ((225, 225, 230), (40, 40, 45), (160, 165, 172), (170, 30, 30), (40, 60, 140), (90, 100, 80))

    def __init__(self, rng, x0, z0, vx, vz, surface):
        self.x0, self.z0, self.vx, self.vz, self.surface = x0, z0, vx, vz, surface
        self.width = rng.uniform(1.7, 2.0)
        self.roof = rng.uniform(1.4, 1.65)
        self.colour = np.asarray(self.COLOURS[rng.integers(len(self.COLOURS))], dtype=np.float64)
        self.colour = np.clip(self.colour + rng.normal(0, 10, 3), 0, 255)
        self.extent = (-self.width / 2, self.width / 2, self.roof + 0.05)

    def shade(self, a, b, frame):
        w = self.width / 2
        body = _box(a, b, -w, w, 0.25, 1.0)
        cabin = _box(a, b, -w * 0.82, w * 0.82, 1.0, self.roof) & \
                (np.abs(a) < w * 0.82 - (b - 1.0) * 0.35)  # sloped pillars
        window = _box(a, b, -w * 0.68, w * 0.68, 1.06, self.roof - 0.08) & cabin
        wheels = _box(np.abs(a), b, w * 0.55, w * 0.92, 0.0, 0.4)
        lights = _box(np.abs(a), b, w * 0.7, w * 0.95, 0.75, 0.9)
        hit = body | cabin | wheels
        rgb = np.tile(self.colour / 255.0, (int(hit.sum()), 1))
        rgb[window[hit]] = (0.15, 0.18, 0.24)
        rgb[lights[hit]] = (0.85, 0.15, 0.1)
        rgb[(wheels & ~body)[hit]] = (0.07, 0.07, 0.07)
        rgb[_box(a, b, -w, w, 0.25, 0.4)[hit]] *= 0.6  # bumper shadow
        return hit, rgb, CAR, 0, a[hit], b[hit]


class Pedestrian(Billboard):
    """A walking person: rigid head and torso, swinging arms and legs (non-rigid motion)."""
    # (pivot, length, half width) of the left leg, right leg, left arm, right arm of an unscaled body
    LIMBS = (((-0.08, 0.92), 0.86, 0.085), ((0.08, 0.92), 0.86, 0.085), ((-0.23, 1.42), 0.6, 0.05),
             ((0.23, 1.42), 0.6, 0.05))

    def __init__(self, rng, x0, z0, vx, vz, surface):
        self.x0, self.z0, self.vx, self.vz, self.surface = x0, z0, vx, vz, surface
        self.scale = rng.uniform(0.9, 1.1)
        self.shirt = rng.uniform(30, 230, 3)
        self.trousers = rng.uniform(20, 90, 3)
        self.skin = np.array([rng.uniform(120, 230), rng.uniform(90, 180), rng.uniform(70, 140)])
        self.phase = rng.uniform(0, 2 * np.pi)
        self.stride = 0.6 + 2.5 * math.hypot(vx, vz)  # faster walkers swing more (radians)
        self.cadence = rng.uniform(0.45, 0.6)  # radians of the gait cycle per frame
        self.extent = (-0.7 * self.scale, 0.7 * self.scale, 1.85 * self.scale)

    def _angles(self, frame):
        swing = self.stride * 0.5 * math.sin(self.phase + self.cadence * frame)
        return (swing, -swing, -0.8 * swing, 0.8 * swing)  # left leg, right leg, left arm, right arm

    def shade(self, a, b, frame):
        a, b = a / self.scale, b / self.scale  # shapes in an unscaled 1.75 m body
        now, before = self._angles(frame), self._angles(frame - 1)
        part = np.full(a.shape, -1, dtype=np.int32)
        a_prev, b_prev = a.copy(), b.copy()
        # Back to front: limbs of the far side, torso, head, near-side limbs.
        for index in (1, 3):
            self._limb(a, b, *self.LIMBS[index], now[index], before[index], index + 1, part, a_prev, b_prev)
        part[_box(a, b, -0.2, 0.2, 0.88, 1.5)] = 0
        part[_ellipse(a, b, 0.0, 1.62, 0.11, 0.13)] = 5
        rigid = (part == 0) | (part == 5)
        a_prev[rigid], b_prev[rigid] = a[rigid], b[rigid]
        for index in (0, 2):
            self._limb(a, b, *self.LIMBS[index], now[index], before[index], index + 1, part, a_prev, b_prev)
        hit = part >= 0
        colours = np.stack([self.shirt, self.trousers, self.trousers, self.shirt, self.shirt, self.skin]) / 255.0
        rgb = colours[part[hit]] * (0.9 + 0.1 * np.cos(a[hit] * 8.0))[:, None]
        return hit, rgb, PERSON, part[hit], a_prev[hit] * self.scale, b_prev[hit] * self.scale

    @staticmethod
    def _limb(a, b, pivot, length, width, angle, angle_before, part_id, part, a_prev, b_prev):
        """Mark a limb (a rotated bar hanging from ``pivot``) and give its points' previous positions."""
        sin, cos = math.sin(angle), math.cos(angle)  # along the limb: (sin, -cos), downwards swung by ``angle``
        ra, rb = a - pivot[0], b - pivot[1]
        along, across = ra * sin + rb * -cos, ra * cos + rb * sin
        on = (along >= -width) & (along < length) & (np.abs(across) < width)
        sin, cos = math.sin(angle_before), math.cos(angle_before)
        part[on] = part_id
        a_prev[on] = pivot[0] + along[on] * sin + across[on] * cos
        b_prev[on] = pivot[1] + along[on] * -cos + across[on] * sin


def _points(cam, rays, t):
    dx, dy, dz = rays
    return cam.position[0] + t * dx, cam.position[1] + t * dy, cam.position[2] + t * dz


def _side_plane_points(x0, starts, ends, cam, grid):
    """Where each pixel's ray meets the street-side plane ``x = x0``: ray parameter ``t``, the 3-D point, the index
    of the z-segment it falls in, its height above the ground, and whether it is in front, in the segment, above
    the ground."""
    t = (x0 - cam.position[0]) / grid['rays'][0]
    px, py, pz = _points(cam, grid['rays'], t)
    seg = np.clip(np.searchsorted(starts, pz, side='right') - 1, 0, len(starts) - 1)
    height = CAMERA_HEIGHT - py
    return t, px, py, pz, seg, height, (t > NEAR) & (pz >= starts[seg]) & (pz < ends[seg]) & (height >= 0)


class Street:
    """One snippet's scene, drawn deterministically from ``rng``."""

    def __init__(self, rng, height, width, n_frames, difficulty):
        self.height, self.width, self.n_frames = height, width, n_frames
        self.focal = difficulty.focal * width
        self.horizon = 0.42 * height
        self.road_half = rng.uniform(3.5, 5.5)
        self.sidewalk = rng.uniform(2.5, 4.5)
        self.difficulty = difficulty
        self._camera_path(rng)
        self.road_colour = np.array([80, 80, 86]) + rng.normal(0, 6, 3)
        self.sidewalk_colour = np.array([175, 160, 145]) + rng.normal(0, 8, 3)
        self.road_waves = _random_waves(rng, 5, (0.8, 3.0))
        self.sidewalk_waves = _random_waves(rng, 3, (0.3, 1.2))
        self.sky_waves = _random_waves(rng, 5, (1.5, 5.0))
        self.light_phase = rng.uniform(0, 2 * np.pi)
        self.light_period = rng.uniform(25, 60)
        self.tint = rng.normal(0.0, 0.4, 3)
        z_end = self.camera_z[-1] + FAR
        self.elements = []
        self._next_surface = 16
        self._facades(rng, z_end)
        self._street_furniture(rng, z_end)
        self._traffic(rng)
        self._people(rng)

    def _surface_ids(self, count):
        first = self._next_surface
        self._next_surface += count
        return first

    def _camera_path(self, rng):
        d = self.difficulty
        frames = np.arange(-1, self.n_frames)  # frame -1 only serves the flow into frame 0 (never written)
        speed = rng.uniform(*d.ego_speed) * (1.0 + 0.2 * np.sin(rng.uniform(0, 6.3) + frames * 0.15))
        self.camera_z = np.cumsum(speed) - speed[0]
        self.lane_x = 0.3 * self.road_half  # we drive right of the centre line
        self.camera_x = self.lane_x + d.sway * np.sin(rng.uniform(0, 6.3) + frames * rng.uniform(0.08, 0.2))
        self.camera_y = 0.02 * np.sin(rng.uniform(0, 6.3) + frames * 0.9)
        self.camera_yaw = np.radians(d.yaw) * np.sin(rng.uniform(0, 6.3) + frames * rng.uniform(0.1, 0.25))
        self.camera_pitch = np.radians(d.pitch) * np.sin(rng.uniform(0, 6.3) + frames * rng.uniform(0.5, 1.0))

    def camera(self, frame):
        i = frame + 1
        return Camera(self.focal, (self.width - 1) / 2.0, self.horizon,
                      np.array([self.camera_x[i], self.camera_y[i], self.camera_z[i]]),
                      _rotation(self.camera_yaw[i], self.camera_pitch[i]))

    def _facades(self, rng, z_end):
        building_colours = np.array([(150, 80, 60), (190, 170, 130), (210, 200, 170), (130, 140, 160),
                                     (180, 130, 70), (120, 95, 80)], dtype=np.float64)
        for side in (-1.0, 1.0):
            near_x = side * (self.road_half + self.sidewalk)
            for depth_x, gap_rate, height_range in ((near_x, 0.18, (6.0, 20.0)),
                                                    (near_x + side * rng.uniform(6, 12), 0.0, (14.0, 32.0))):
                segments, z = [], -20.0
                while z < z_end:
                    length = rng.uniform(6.0, 22.0)
                    kind_draw = rng.uniform()
                    if kind_draw < gap_rate:
                        kind, h = BUILDING, 0.0
                    elif kind_draw < gap_rate + 0.15:
                        kind, h = VEGETATION, rng.uniform(1.5, 3.5)
                    else:
                        kind, h = BUILDING, rng.uniform(*height_range)
                    colour = building_colours[rng.integers(len(building_colours))] + rng.normal(0, 10, 3)
                    if kind == VEGETATION:
                        colour = np.array([rng.uniform(40, 80), rng.uniform(100, 150), rng.uniform(25, 55)])
                    segments.append((z, z + length, h, kind, np.clip(colour, 0, 255)))
                    z += length
                columns = [np.array(column) for column in zip(*segments)]  # starts, ends, heights, kinds, colours
                self.elements.append(FacadeRow(depth_x, *columns, self._surface_ids(1),
                                               _random_waves(rng, 4, (0.3, 1.5))))

    def _street_furniture(self, rng, z_end):
        for side in (-1.0, 1.0):
            kerb = side * self.road_half
            fence_x = side * (self.road_half + self.sidewalk - 0.4)
            starts = np.sort(rng.uniform(-20, z_end, size=8))
            ends = starts + rng.uniform(6, 20, size=8)
            colour = (rng.uniform(100, 150), rng.uniform(75, 120), rng.uniform(40, 75))  # weathered wood / rust
            self.elements.append(Fence(fence_x, starts, ends, colour, self._surface_ids(1)))
            z = rng.uniform(-5, 10)
            while z < z_end:
                if rng.uniform() < 0.5:
                    x = kerb + side * rng.uniform(0.4, 0.8)
                    self.elements.append(Pole(rng, x, z, self._surface_ids(2)))
                else:
                    x = kerb + side * rng.uniform(1.2, self.sidewalk - 0.8)
                    self.elements.append(Tree(rng, x, z, self._surface_ids(1)))
                z += rng.uniform(4.0, 12.0)

    def _traffic(self, rng):
        d = self.difficulty
        ego_speed = float(np.mean(np.diff(self.camera_z)))
        for _ in range(rng.integers(*d.n_cars, endpoint=True)):
            kind = rng.uniform()
            if kind < 0.35:  # oncoming, in the other lane
                x, vz = -0.5 * self.road_half + rng.uniform(-0.3, 0.3), -rng.uniform(*d.car_speed)
                z = rng.uniform(8, 60) - vz * self.n_frames * 0.3
            elif kind < 0.7:  # ahead in our lane, a bit faster or slower than us (never reaching us)
                x, vz = self.lane_x + rng.uniform(-0.3, 0.3), ego_speed + rng.uniform(-0.15, 0.25)
                z = rng.uniform(8, 40)
            else:  # parked at the kerb
                side = rng.choice((-1.0, 1.0))
                x, vz = side * (self.road_half - 0.9), 0.0
                z = rng.uniform(3, 60)
            self.elements.append(Car(rng, x, z, 0.0, vz, self._surface_ids(1)))

    def _people(self, rng):
        d = self.difficulty
        for _ in range(rng.integers(*d.n_people, endpoint=True)):
            speed = rng.uniform(*d.walk_speed)
            if rng.uniform() < 0.25:  # crossing the road
                z = rng.uniform(20, 45)
                direction = rng.choice((-1.0, 1.0))
                x = -direction * rng.uniform(0, self.road_half)
                vx, vz = direction * speed, 0.0
            else:  # along the sidewalk
                side = rng.choice((-1.0, 1.0))
                x = side * (self.road_half + rng.uniform(0.6, self.sidewalk - 0.6))
                z = rng.uniform(4, 35)
                vx, vz = 0.0, rng.choice((-1.0, 1.0)) * speed
            self.elements.append(Pedestrian(rng, x, z, vx, vz, self._surface_ids(6)))

    def render(self, frame):
        """Noise-free RGB (H, W, 3) in [0, 1], label (H, W) uint8, surface id (H, W), backward flow (2, H, W)."""
        cam, prev_cam = self.camera(frame), self.camera(frame - 1)
        vs, us = np.mgrid[0:self.height, 0:self.width].astype(np.float64)
        grid = {'rays': cam.rays(us, vs), 'shape': (self.height, self.width),
                'all': (slice(0, self.height), slice(0, self.width))}
        buffer = FrameBuffer(self.height, self.width)
        with np.errstate(divide='ignore', invalid='ignore'):  # rays parallel to a plane never hit it
            self._draw_sky(buffer, cam, prev_cam, grid)
            self._draw_ground(buffer, cam, prev_cam, grid)
            for element in self.elements:
                element.draw(buffer, cam, prev_cam, grid, {'frame': frame})
        self._draw_hood(buffer, us, vs)
        flow = np.stack([buffer.prev_u - us, buffer.prev_v - vs]).astype(np.float32)
        return buffer.rgb, buffer.label, buffer.surface, flow

    def _draw_sky(self, buffer, cam, prev_cam, grid):
        dx, dy, dz = grid['rays']
        norm = np.sqrt(dx ** 2 + dy ** 2 + dz ** 2)
        elevation = np.clip(-dy / norm, 0.0, 1.0)
        azimuth = np.arctan2(dx, dz)
        cloud = np.clip(_waves(self.sky_waves, azimuth * 3.0, elevation * 6.0) * 1.6 - 0.2, 0.0, 1.0)
        base = np.array([0.55, 0.7, 0.9]) * (1 - elevation[..., None]) + np.array([0.25, 0.45, 0.8]) * \
            elevation[..., None]
        buffer.rgb[:] = base * (1 - cloud[..., None] * 0.8) + 0.92 * cloud[..., None] * 0.8
        buffer.label[:] = SKY
        buffer.surface[:] = 1
        # The sky is at infinity: only the camera's rotation moves it.
        buffer.prev_u[:], buffer.prev_v[:], _ = prev_cam.project(dx, dy, dz, at_infinity=True)

    def _draw_ground(self, buffer, cam, prev_cam, grid):
        dx, dy, dz = grid['rays']
        t = (CAMERA_HEIGHT - cam.position[1]) / dy
        hit = (dy > 1e-9) & (t > NEAR)
        px, py, pz = _points(cam, grid['rays'], np.where(hit, t, 0.0))
        x, z, d = px[hit], pz[hit], t[hit]
        on_road = np.abs(x) < self.road_half
        fade = _fade(d)
        road = _shade(self.road_colour, _waves(self.road_waves, x, z) * fade, 0.3)
        walk = _shade(self.sidewalk_colour, _waves(self.sidewalk_waves, x, z) * fade, 0.15)
        grout = (np.mod(x, 1.2) < 0.08) | (np.mod(z, 1.2) < 0.08)
        walk[grout] *= 1.0 - 0.25 * fade[grout, None]
        kerb = (np.abs(x) >= self.road_half) & (np.abs(x) < self.road_half + 0.25)
        walk[kerb] = 0.82
        centre_line = (np.abs(x) < 0.09) & (np.mod(z, 9.0) < 4.0)
        edge_line = np.abs(np.abs(x) - (self.road_half - 0.3)) < 0.08
        road[centre_line | edge_line] = 0.9
        rgb = np.where(on_road[:, None], road, walk)
        label = np.where(on_road, ROAD, SIDEWALK).astype(np.uint8)
        u, v, _ = prev_cam.project(x, py[hit], z)
        buffer.paint(grid['all'], hit, t, rgb, label, 2, u, v)

    def _draw_hood(self, buffer, us, vs):
        """The ego vehicle's bonnet: fixed in the image (flow 0), ignore label, like Cityscapes' ego vehicle."""
        centred = (us - (self.width - 1) / 2.0) / (self.width / 2.0)
        top = self.height * (1.0 - 0.07 * (1.0 - 0.6 * centred ** 2))
        hood = vs >= top
        buffer.rgb[hood] = np.array([0.12, 0.13, 0.15]) + 0.1 * np.exp(-((vs[hood] - top[hood]) * 0.8))[:, None]
        buffer.label[hood] = IGNORE_INDEX
        buffer.surface[hood] = 3
        buffer.prev_u[hood], buffer.prev_v[hood] = us[hood], vs[hood]

    def lighting(self, frame):
        """Per-channel gain of frame ``frame``: a slow global drift with a slight colour cast."""
        drift = self.difficulty.light * math.sin(self.light_phase + 2 * math.pi * frame / self.light_period)
        return 1.0 + drift * (1.0 + 0.3 * self.tint)


def flow_validity(flow, surface_now, surface_before):
    """True where the point seen at p in frame t was visible in frame t-1 at ``p + flow``: inside the image, and the
    four pixels around it (the warp's bilinear footprint) show the same surface in frame t-1."""
    height, width = surface_now.shape
    vs, us = np.mgrid[0:height, 0:width]
    x, y = us + flow[0], vs + flow[1]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    x0 = np.clip(np.floor(x), 0, width - 1).astype(np.int64)
    y0 = np.clip(np.floor(y), 0, height - 1).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    same = np.ones_like(inside)
    for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)):
        same &= surface_before[yy, xx] == surface_now
    return inside & same


def sensor_image(rgb, gain, noise, rng):
    """uint8 BGR frame (for cv2.imwrite): lighting gain, Gaussian sensor noise, 8-bit quantisation."""
    image = rgb * gain + rng.normal(0.0, noise, rgb.shape)
    return cv2.cvtColor(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def _seeded_rng(seed, split, index, stream):
    return np.random.default_rng([seed, _SPLIT_CODES[split], index, stream])


def snippet_name(split, index):
    """(city, sequence number) of the ``index``-th snippet of a split."""
    cities = CITIES[split]
    return cities[index % len(cities)], index // len(cities)


def difficulty_with(name, **overrides):
    """A preset with some fields replaced, e.g. ``difficulty_with('medium', noise=0.0, light=0.0)``."""
    return replace(DIFFICULTIES[name], **overrides)
