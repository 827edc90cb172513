"""Each rank of an mpirun under /usr/bin/time, writing its peak RSS to a file of its own.

Two ranks' lines on one stderr can interleave ("mmaxrss_kb 48640axrss_kb 45856") and hide a
number, so the peak goes to PREFIX.RANK instead: put `*wrap(prefix)` before the program.
"""
import glob
import os


def wrap(prefix):
    return ["sh", "-c", '/usr/bin/time -f %M -o "$0.$OMPI_COMM_WORLD_RANK" "$@"', prefix]


def peak_rss(prefix):
    """The largest peak RSS (KB) in the ranks' files PREFIX.RANK, which are removed."""
    peak = 0
    for f in glob.glob(glob.escape(prefix) + ".*"):
        try:
            peak = max(peak, int(open(f).read().split()[-1]))
        except (ValueError, IndexError):
            pass
        os.remove(f)
    return peak
