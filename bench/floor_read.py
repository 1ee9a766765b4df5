#!/usr/bin/python3
"""The floor for `vbridge plan` (reads only): one libvirt connection, one listAllDomains for the
handles (no lookup per VM), then every named VM's persistent XML read by THREADS threads.
Usage: floor_read.py THREADS URI VM..."""
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import libvirt

threads, uri, names = int(sys.argv[1]), sys.argv[2], set(sys.argv[3:])
libvirt.registerErrorHandler(lambda *_: None, None)
start = time.monotonic()
conn = libvirt.open(uri)
flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
doms = [d for d in conn.listAllDomains(0) if d.name() in names]
assert len(doms) == len(names), "every VM listed"
with ThreadPoolExecutor(threads) as pool:
    list(pool.map(lambda d: d.XMLDesc(flags), doms))
conn.close()
print("%.6f" % (time.monotonic() - start))
