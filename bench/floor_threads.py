#!/usr/bin/python3
"""The floor with calls in flight: one libvirt connection shared by THREADS threads, each doing
lookup + XMLDesc + defineXML for its share of the VMs. Usage: floor_threads.py THREADS URI BRIDGE VM..."""
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import libvirt

threads, uri, bridge, names = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
libvirt.registerErrorHandler(lambda *_: None, None)
start = time.monotonic()
conn = libvirt.open(uri)
flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE


def one(name):
    dom = conn.lookupByName(name)
    xml = dom.XMLDesc(flags)
    xml = xml.replace("<interface type='network'>", "<interface type='bridge'>", 1)
    xml = xml.replace("<source network='default'/>", "<source bridge='%s'/>" % bridge, 1)
    conn.defineXML(xml)


with ThreadPoolExecutor(threads) as pool:
    list(pool.map(one, names))
conn.close()
print("%.6f" % (time.monotonic() - start))
