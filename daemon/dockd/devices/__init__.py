"""Cameras: where they come from and how their storage is read without trusting it.

- `source`: the `CameraSource` / `CameraEvents` interface and `DockedCamera`, which every camera
  source (bay folders, udev) feeds into the pipeline.
- `folder`: `FolderSource`, bay folders watched with watchdog (dev, demo, drop-folder docks).
- `camera`: safe clip discovery (`scan_camera`) and access (`open_clip`, `stat_clip`,
  `wipe_clip`) on a hostile filesystem: no symlinks followed, no special files read, raw-byte
  names, bounded work.
- `globs`: the `**`-aware clip glob matcher used by the scan.
"""
