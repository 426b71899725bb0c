"""A synthetic driving world rendered through a camera rig: a road grid, an ego vehicle that drives
it and turns at intersections, traffic (cars, trucks), pedestrians on the sidewalks, cones at the road
edge and buildings along the roadside -- with ground truth (BEV class grid, object boxes, ego pose)
for every timestamp.

No driving dataset can be downloaded here, so this world stands in for one: everything is a pure
function of (seed, time), so any sample can be rendered on its own, in any order, reproducibly.

Rendering (numpy + OpenCV, no GPU): each camera's pixel rays are fixed in the ego frame, so a frame is
one rotation of those rays by the ego heading, a ray/ground-plane intersection per pixel and a
procedural texture lookup (asphalt, lane markings, sidewalk, grass); objects are boxes whose faces are
projected and filled far to near (painter's algorithm) with OpenCV.  Each camera is rendered at its
own capture time (the sample time plus its trigger offset), as a real rig's rolling triggers would
see the world.

World layout: roads run along x = k·spacing and y = k·spacing; traffic drives on the right.  Moving
objects live in "slots" along each road line that move with the line's speed, so traffic is infinite,
collision-free along a line and deterministic: which slots hold what is a hash of (seed, line, slot).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgert.bev.rig import Rig, nuscenes_like_rig
from edgert.bev.schema import BOX_FIELDS, CLASSES, Pose, RigSample, empty_boxes

CLS = {name: i for i, name in enumerate(CLASSES)}

# object kinds: (class, length, width, height) in metres; roughly nuScenes' mean sizes
_DIMS = {"car": (4.5, 1.9, 1.6), "truck": (8.0, 2.5, 3.2), "pedestrian": (0.7, 0.7, 1.75),
         "cone": (0.45, 0.45, 0.75), "building": (12.0, 8.0, 9.0)}
_COLOURS = {"truck": (200, 200, 210), "pedestrian": (60, 40, 120), "cone": (255, 110, 20),
            "building": (150, 130, 115)}
_CAR_COLOURS = ((200, 30, 30), (30, 60, 190), (230, 230, 230), (30, 30, 30), (120, 120, 130), (220, 190, 40))


@dataclass(frozen=True)
class WorldOptions:
    seed: int = 0
    rate_hz: float = 12.0             # nuScenes' camera rate
    road_spacing_m: float = 60.0
    road_width_m: float = 10.0        # two lanes
    ego_speed_mps: float = 8.0
    traffic_spacing_m: float = 22.0   # slot pitch along a road line (a slot may be empty)
    traffic_fill: float = 0.45        # probability a traffic slot holds a vehicle
    truck_share: float = 0.2
    pedestrian_spacing_m: float = 9.0
    pedestrian_fill: float = 0.3
    cone_fill: float = 0.12           # per 20 m of road edge
    view_m: float = 70.0              # nothing farther is drawn (haze)


_M64 = (1 << 64) - 1


def _mix_int(h: int, k: int) -> int:
    h = ((h ^ ((int(k) + 0x632BE59BD9B4E019) & _M64)) * 0xBF58476D1CE4E5B9) & _M64
    return h ^ (h >> 31)


def _hash(*keys) -> np.ndarray | float:
    """Deterministic uniform floats in [0, 1) from integer keys (splitmix-style; scalars in plain
    Python, arrays vectorised and broadcast)."""
    if not any(isinstance(k, np.ndarray) for k in keys):
        h = 0x9E3779B97F4A7C15
        for k in keys:
            h = _mix_int(h, k)
        return (h >> 11) / float(1 << 53)
    h = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        for k in keys:
            kk = np.asarray(k).astype(np.int64).view(np.uint64) if isinstance(k, np.ndarray) \
                else np.uint64(int(k) & _M64)
            h = (h ^ (kk + np.uint64(0x632BE59BD9B4E019))) * np.uint64(0xBF58476D1CE4E5B9)
            h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class EgoRoute:
    """The ego's path: straight road segments joined by quarter-circle turns at intersections, as a
    list of primitives (start x, y, yaw, length, curvature), and its speed profile."""

    def __init__(self, o: WorldOptions, seconds: float = 3600.0):
        self.o = o
        lane = o.road_width_m / 4                           # the right lane's centre
        L = o.road_spacing_m
        rng = np.random.default_rng(o.seed)
        x, y, yaw = L / 2, -lane, 0.0                       # halfway between intersections, heading +x
        self.prims: list[tuple[float, float, float, float, float]] = []
        total, need = 0.0, o.ego_speed_mps * seconds * 1.3 + 200
        ix, iy = 1, 0                                        # the next intersection (in road units)
        while total < need:
            hx, hy = round(math.cos(yaw)), round(math.sin(yaw))
            rx, ry = hy, -hx                                 # right of the heading
            cx, cy = ix * L, iy * L
            turn = rng.choice(3, p=(0.5, 0.25, 0.25))        # straight, left, right
            if turn == 0:
                end = (cx + rx * lane + hx * (L / 2), cy + ry * lane + hy * (L / 2))
                d = abs((end[0] - x) * hx + (end[1] - y) * hy)
                self.prims.append((x, y, yaw, d, 0.0))
                x, y = end
                total += d
                ix, iy = ix + hx, iy + hy
                continue
            r = 8.0 if turn == 1 else 6.0
            along = (lane - r) if turn == 1 else -(lane + r)   # arc start relative to the intersection
            sx, sy = cx + rx * lane + hx * along, cy + ry * lane + hy * along
            d = abs((sx - x) * hx + (sy - y) * hy)
            self.prims.append((x, y, yaw, d, 0.0))
            k = (1 / r) if turn == 1 else (-1 / r)
            self.prims.append((sx, sy, yaw, math.pi / 2 * r, k))
            total += d + math.pi / 2 * r
            yaw = (yaw + (math.pi / 2 if turn == 1 else -math.pi / 2)) % (2 * math.pi)
            x, y = self._arc_end(sx, sy, self.prims[-1][2], math.pi / 2 * r, k)
            nhx, nhy = round(math.cos(yaw)), round(math.sin(yaw))
            ix, iy = ix + nhx, iy + nhy
            # straight on to the halfway point of the next block is covered by the next primitive
        self.starts = np.cumsum([0.0] + [p[3] for p in self.prims])

    @staticmethod
    def _arc_end(x, y, yaw, d, k):
        if k == 0:
            return x + math.cos(yaw) * d, y + math.sin(yaw) * d
        return (x + (math.sin(yaw + k * d) - math.sin(yaw)) / k, y - (math.cos(yaw + k * d) - math.cos(yaw)) / k)

    def distance(self, t_s: float) -> float:
        v = self.o.ego_speed_mps
        return v * t_s + 0.2 * v * 20 / (2 * math.pi) * math.sin(2 * math.pi * t_s / 20)   # ±20% speed

    def speed(self, t_s: float) -> float:
        return self.o.ego_speed_mps * (1 + 0.2 * math.cos(2 * math.pi * t_s / 20))

    def pose(self, t_s: float) -> tuple[Pose, float]:
        """(pose, yaw rate rad/s) at time t."""
        s = self.distance(t_s)
        i = int(np.searchsorted(self.starts, s, side="right") - 1)
        i = min(max(i, 0), len(self.prims) - 1)
        x, y, yaw, _, k = self.prims[i]
        d = s - self.starts[i]
        px, py = self._arc_end(x, y, yaw, d, k)
        return Pose(px, py, (yaw + k * d + math.pi) % (2 * math.pi) - math.pi), k * self.speed(t_s)


class World:
    """world.sample(i) -> RigSample at t = i / rate_hz, rendered through `rig`."""

    def __init__(self, rig: Rig | None = None, options: WorldOptions | None = None):
        self.rig = rig or nuscenes_like_rig()
        self.o = options or WorldOptions()
        self.rate_hz = self.o.rate_hz
        self.route = EgoRoute(self.o)
        self._rays = [c.rays_ego() for c in self.rig.cameras]
        self._cells = self.rig.grid.cell_centres().reshape(-1, 2)
        # ground texture: a 128 m tile of 0.5 m cells, repeated (a per-pixel hash costs 10x more)
        self._texture = np.random.default_rng(self.o.seed + 7).random((256, 256), dtype=np.float32)

    # -- objects ---------------------------------------------------------------------------------
    def objects(self, t_s: float, centre: tuple[float, float], radius_m: float) -> list[tuple]:
        """(kind, x, y, yaw, vx, vy, colour, key, height) of every object within radius_m of `centre` at time t
        (world frame).  Static buildings included."""
        o, L, W = self.o, self.o.road_spacing_m, self.o.road_width_m
        cx, cy = centre
        out = []
        for axis in (0, 1):                                   # roads along x (axis 0: y = jL) and y
            along_c, across_c = (cx, cy) if axis == 0 else (cy, cx)
            for j in range(math.floor((across_c - radius_m) / L), math.ceil((across_c + radius_m) / L) + 1):
                line = j * L
                for direction in (1, -1):
                    key_line = (o.seed, axis, j, direction)
                    # traffic: right-hand lane of this direction (offset to the right of travel)
                    speed = 5.0 + 6.0 * float(_hash(*key_line, 1))
                    self._slots(out, t_s, key_line, axis, along_c, radius_m, line - direction * W / 4 * (1 if axis == 0 else -1),
                                direction, speed, o.traffic_spacing_m, o.traffic_fill, "vehicle")
                    side = line - direction * (W / 2 + 1.5) * (1 if axis == 0 else -1)
                    self._slots(out, t_s, key_line + (7,), axis, along_c, radius_m, side, direction,
                                1.1 + 0.5 * float(_hash(*key_line, 2)), o.pedestrian_spacing_m, o.pedestrian_fill,
                                "pedestrian")
                    edge = line - direction * (W / 2 - 0.4) * (1 if axis == 0 else -1)
                    self._slots(out, t_s, key_line + (9,), axis, along_c, radius_m, edge, direction, 0.0, 20.0,
                                o.cone_fill, "cone")
                    bside = line - direction * (W / 2 + 3.0 + 4.0) * (1 if axis == 0 else -1)
                    self._slots(out, t_s, key_line + (11,), axis, along_c, radius_m, bside, direction, 0.0, 20.0,
                                0.5, "building")
        r2 = radius_m ** 2
        return [ob for ob in out if (ob[1] - cx) ** 2 + (ob[2] - cy) ** 2 <= r2 and not self._in_junction(ob)]

    def _in_junction(self, ob) -> bool:
        """Static objects and pedestrians stay out of intersections (buildings off the corner lots)."""
        if ob[0] == "car" or ob[0] == "truck":
            return False
        L, W = self.o.road_spacing_m, self.o.road_width_m
        margin = W / 2 + (12.0 if ob[0] == "building" else 2.0)
        dx = abs(ob[1] - round(ob[1] / L) * L)
        dy = abs(ob[2] - round(ob[2] / L) * L)
        return dx < margin and dy < margin

    def _slots(self, out, t_s, key, axis, along_c, radius_m, across, direction, speed, pitch, fill, kind):
        shift = direction * speed * t_s + float(_hash(*key, 3)) * pitch
        k0 = math.floor((along_c - radius_m - shift) / pitch)
        k1 = math.ceil((along_c + radius_m - shift) / pitch)
        ks = np.arange(k0, k1 + 1)
        if ks.size == 0:
            return
        present = _hash(*key, ks, 4) < fill
        jitter = (_hash(*key, ks, 5) - 0.5) * 0.3 * pitch
        yaw = (0.0 if axis == 0 else math.pi / 2) + (0.0 if direction == 1 else math.pi)
        v = direction * speed
        ks, jitter = ks[present], jitter[present]
        kind_u = _hash(*key, ks, 6)
        colour_u = _hash(*key, ks, 8)
        height_u = _hash(*key, ks, 10)
        for k, jt, ku, cu, hu in zip(ks.tolist(), jitter.tolist(), kind_u.tolist(), colour_u.tolist(),
                                     height_u.tolist()):
            pos = k * pitch + shift + jt
            x, y = (pos, across) if axis == 0 else (across, pos)
            vx, vy = (v, 0.0) if axis == 0 else (0.0, v)
            kd = ("truck" if ku < self.o.truck_share else "car") if kind == "vehicle" else kind
            colour = _CAR_COLOURS[int(cu * len(_CAR_COLOURS))] if kd == "car" else _COLOURS[kd]
            # buildings face their road; everything else faces its direction of travel
            height = 6.0 + 10.0 * hu if kd == "building" else _DIMS[kd][2]
            out.append((kd, x, y, (0.0 if axis == 0 else math.pi / 2) if kd == "building" else yaw,
                        vx if kd != "building" else 0.0, vy if kd != "building" else 0.0, colour, k, height))

    # -- samples ---------------------------------------------------------------------------------
    def pose(self, t_s: float) -> Pose:
        return self.route.pose(t_s)[0]

    def sample(self, i: int) -> RigSample:
        t_s = i / self.rate_hz
        pose = self.pose(t_s)
        frames, frame_t = [], []
        objs = self.objects(t_s, (pose.x, pose.y), self.o.view_m + 5)     # moved per camera below
        for c, cam in enumerate(self.rig.cameras):
            tc = t_s + cam.trigger_offset_ms / 1000
            frames.append(self.render(c, tc, objs, t_s))
            frame_t.append(int(round(tc * 1e6)))
        grid, boxes = self.ground_truth(t_s, objs)
        return RigSample(index=i, t_us=int(round(t_s * 1e6)), frames=frames, frame_t_us=frame_t, pose=pose,
                         gt_grid=grid, gt_boxes=boxes)

    def _near_ego(self, ob, pose: Pose) -> bool:
        """Objects overlapping the ego vehicle (traffic in its own lane catching up) are not drawn
        or labelled: the cameras would sit inside them."""
        return (ob[1] - pose.x) ** 2 + (ob[2] - pose.y) ** 2 < 4.5 ** 2

    def ground_truth(self, t_s: float, objects: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(grid [S, S] uint8 classes, boxes [N, 10]) in the ego frame at time t (`objects`: the
        world's objects at time t, if already listed with a radius covering the grid)."""
        import cv2

        pose, _ = self.route.pose(t_s)
        g = self.rig.grid
        world = pose.to_world(self._cells)
        grid = np.where(self._road(world[:, 0], world[:, 1]), CLS["road"], CLS["background"]).astype(np.uint8)
        grid = grid.reshape(g.size, g.size)
        rows = []
        reach = g.half_m * math.sqrt(2) + 8
        if objects is None:
            objects = self.objects(t_s, (pose.x, pose.y), reach)
        for kind, x, y, yaw, vx, vy, *_ in objects:
            if kind == "building" or self._near_ego((kind, x, y), pose):
                continue
            l, w, h = _DIMS[kind]
            cxy = pose.to_ego(np.array([[x, y]]))[0]
            ryaw = (yaw - pose.yaw + math.pi) % (2 * math.pi) - math.pi
            corners = _footprint(cxy[0], cxy[1], l, w, ryaw)
            rc = g.to_cell(corners)[:, ::-1]                     # (col, row) for OpenCV
            cv2.fillPoly(grid, [np.round(rc * 16).astype(np.int32)], int(CLS[kind]), lineType=cv2.LINE_8, shift=4)
            if abs(cxy[0]) < g.half_m and abs(cxy[1]) < g.half_m:
                c, s = math.cos(pose.yaw), math.sin(pose.yaw)
                rows.append((CLS[kind], cxy[0], cxy[1], h / 2, l, w, h, ryaw, c * vx + s * vy, -s * vx + c * vy))
        boxes = np.array(rows, np.float32).reshape(-1, len(BOX_FIELDS)) if rows else empty_boxes()
        return grid, boxes

    # -- rendering -------------------------------------------------------------------------------
    def _road(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        L, half = self.o.road_spacing_m, self.o.road_width_m / 2
        return (np.abs(x - np.round(x / L) * L) < half) | (np.abs(y - np.round(y / L) * L) < half)

    def render(self, c: int, t_s: float, objects: list | None = None, objects_t_s: float = 0.0) -> np.ndarray:
        """Camera c's frame at time t: (H, W, 3) uint8 RGB.  `objects`: the world's objects at time
        objects_t_s (every object moves in a straight line, so they are advanced to t here)."""
        cam = self.rig.cameras[c]
        pose, _ = self.route.pose(t_s)
        cyaw, syaw = math.cos(pose.yaw), math.sin(pose.yaw)
        rot = np.array([[cyaw, -syaw, 0], [syaw, cyaw, 0], [0, 0, 1]])
        d = self._rays[c] @ rot.T                                # world ray directions [H, W, 3]
        origin = pose.to_world(np.array([[cam.x_m, cam.y_m]]))[0]
        img = self._ground(d, origin, cam.z_m)
        if objects is None:
            objs = self.objects(t_s, (pose.x, pose.y), self.o.view_m)
        else:
            dt = t_s - objects_t_s
            objs = [(o[0], o[1] + o[4] * dt, o[2] + o[5] * dt) + o[3:] for o in objects]
        objs = [ob for ob in objs if not self._near_ego(ob, pose)]
        if objs:
            self._draw_boxes(img, cam, pose, objs)
        return img

    def _draw_boxes(self, img: np.ndarray, cam, pose: Pose, objs: list) -> None:
        """Project every object's box into the camera at once and fill the visible faces far to near."""
        import cv2

        a = np.array([(ob[1], ob[2], ob[3], _DIMS[ob[0]][0], _DIMS[ob[0]][1], ob[8]) for ob in objs])
        exy = pose.to_ego(a[:, :2])
        ryaw = a[:, 2] - pose.yaw
        c, s = np.cos(ryaw)[:, None], np.sin(ryaw)[:, None]
        lx = np.array([0.5, -0.5, -0.5, 0.5])[None] * a[:, 3:4]
        wy = np.array([0.5, 0.5, -0.5, -0.5])[None] * a[:, 4:5]
        fx, fy = exy[:, :1] + c * lx - s * wy, exy[:, 1:] + s * lx + c * wy           # [N, 4] footprint
        corners = np.concatenate([np.stack([fx, fy, np.zeros_like(fx)], -1),
                                  np.stack([fx, fy, np.repeat(a[:, 5:6], 4, 1)], -1)], 1)   # [N, 8, 3]
        to_cam = cam.ego_to_cam()
        cc = corners @ to_cam[:3, :3].T + to_cam[:3, 3]
        fc = cc[:, _FACE_IDX]                                   # [N, 5, 4, 3]
        z = fc[..., 2]
        ok = z.min(-1) >= 0.3                                   # faces crossing the image plane: skipped
        uv = fc[..., :2] / np.maximum(z, 0.3)[..., None] * cam.focal_px + (cam.width / 2, cam.height / 2)
        ok &= (uv[..., 0].max(-1) >= 0) & (uv[..., 0].min(-1) < cam.width) & \
            (uv[..., 1].max(-1) >= 0) & (uv[..., 1].min(-1) < cam.height) & (np.abs(uv).max((-1, -2)) < 1e5)
        n, f = np.nonzero(ok)
        order = np.argsort(-z[n, f].mean(-1), kind="stable")
        for i in order:
            ob, face = objs[n[i]], f[i]
            col = tuple(int(v * _FACE_SHADE[face]) for v in ob[6])
            cv2.fillConvexPoly(img, np.round(uv[n[i], face] * 16).astype(np.int32), col, lineType=cv2.LINE_AA,
                               shift=4)

    def _ground(self, d: np.ndarray, origin: np.ndarray, height_m: float) -> np.ndarray:
        H, W, _ = d.shape
        img = np.empty((H, W, 3), np.float32)
        dz = d[..., 2]
        down = dz < -1e-3
        s = np.where(down, height_m / np.maximum(-dz, 1e-3), 1e4)      # rays above the horizon: far away
        x = origin[0] + d[..., 0] * s
        y = origin[1] + d[..., 1] * s
        L, half = self.o.road_spacing_m, self.o.road_width_m / 2
        offx, offy = np.abs(x - np.round(x / L) * L), np.abs(y - np.round(y / L) * L)
        on_x_road, on_y_road = offy < half, offx < half            # roads along x have |y - jL| small
        road = on_x_road | on_y_road
        junction = on_x_road & on_y_road
        walk = ~road & ((offy < half + 3) | (offx < half + 3))
        noise = self._texture[np.floor(x * 2).astype(np.int64) & 255, np.floor(y * 2).astype(np.int64) & 255]
        grass = np.stack([60 + 30 * noise, 110 + 40 * noise, 50 + 20 * noise], -1)
        img[:] = grass
        img[walk] = (np.stack([170 + 20 * noise, 168 + 20 * noise, 160 + 20 * noise], -1))[walk]
        img[road] = (np.stack([75 + 20 * noise] * 3, -1))[road]
        # lane markings: a dashed centre line and solid edge lines, not across junctions
        dash_x = (np.mod(x, 6.0) < 3.0) & (offy < 0.15) & on_x_road & ~junction
        dash_y = (np.mod(y, 6.0) < 3.0) & (offx < 0.15) & on_y_road & ~junction
        edge = ((np.abs(offy - (half - 0.3)) < 0.12) & on_x_road | (np.abs(offx - (half - 0.3)) < 0.12) & on_y_road) \
            & ~junction
        img[dash_x | dash_y | edge] = (235, 235, 225)
        # haze with distance, sky above the horizon
        fade = np.clip((s - 25.0) / (self.o.view_m - 25.0), 0, 1)[..., None]
        haze = np.array([185, 200, 215], np.float32)
        img = img * (1 - fade) + haze * fade
        sky = ~down
        if sky.any():
            up = np.clip(dz[sky], 0, 1)[:, None]
            img[sky] = haze * (1 - up) + np.array([90, 140, 220], np.float32) * up
        return np.clip(img, 0, 255).astype(np.uint8)


# box faces (corner indices: 0-3 bottom, 4-7 top, counter-clockwise) and their shading
_FACE_IDX = np.array([[4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]])
_FACE_SHADE = (1.0, 0.8, 0.65, 0.8, 0.65)


def _footprint(x: float, y: float, length: float, width: float, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    pts = np.array([[length / 2, width / 2], [-length / 2, width / 2], [-length / 2, -width / 2],
                    [length / 2, -width / 2]])
    return pts @ np.array([[c, s], [-s, c]]) + (x, y)
