#include <rte_config.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include <rte_prefetch.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include "shim.h"

uint16_t rte_shim_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_rx_burst(port, queue, pkts, n); }

uint16_t rte_shim_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_tx_burst(port, queue, pkts, n); }

struct rte_mbuf *rte_shim_pktmbuf_alloc(struct rte_mempool *mp)
{ return rte_pktmbuf_alloc(mp); }

int rte_shim_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count)
{ return rte_pktmbuf_alloc_bulk(mp, mbufs, count); }

void rte_shim_pktmbuf_free(struct rte_mbuf *m)
{ rte_pktmbuf_free(m); }

int rte_shim_errno(void)
{ return rte_errno; }

unsigned rte_shim_lcore_id(void)
{ return rte_lcore_id(); }

uint64_t rte_shim_rdtsc(void)
{ return rte_rdtsc(); }

void rte_shim_pause(void)
{ rte_pause(); }

unsigned rte_shim_ring_sp_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{ return rte_ring_sp_enqueue_burst(r, objs, n, NULL); }

unsigned rte_shim_ring_sc_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{ return rte_ring_sc_dequeue_burst(r, objs, n, NULL); }

unsigned rte_shim_ring_count(const struct rte_ring *r)
{ return rte_ring_count(r); }
