"""Compute resources: disks, snapshots, images, virtual machines and their extensions."""
