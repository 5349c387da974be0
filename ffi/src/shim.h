/* Out-of-line wrappers for DPDK's static-inline fast-path API, so Rust can call them. */
#ifndef DKP_SHIM_H
#define DKP_SHIM_H
#include <stdint.h>
struct rte_mbuf;
struct rte_mempool;
struct rte_ring;

uint16_t rte_shim_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t rte_shim_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *rte_shim_pktmbuf_alloc(struct rte_mempool *mp);
int rte_shim_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void rte_shim_pktmbuf_free(struct rte_mbuf *m);
int rte_shim_errno(void);
unsigned rte_shim_lcore_id(void);
uint64_t rte_shim_rdtsc(void);
void rte_shim_pause(void);
unsigned rte_shim_ring_sp_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned rte_shim_ring_sc_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned rte_shim_ring_count(const struct rte_ring *r);
#endif
