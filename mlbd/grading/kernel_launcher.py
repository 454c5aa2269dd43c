"""Starts an IPython kernel as ``python -m ipykernel_launcher`` does, from a path the trusted side
chose. ``-m`` looks for the module in the current directory first: the kernel's work dir, where an
earlier notebook of the same submission may have written an ``ipykernel_launcher.py`` (files a
notebook writes are there for the next one, as with ``nbgrader autograde``). Run as a script, this
file's own folder comes first instead, and is removed before anything is imported: the kernel
then starts with the same ``sys.path`` as one forked from the zygote (IPython adds the work dir,
``''``, itself once it runs)."""
import sys

del sys.path[0]

from ipykernel import kernelapp  # noqa: E402

kernelapp.launch_new_instance()
