/*
 * tunlab.devices.offload._fast: the compiled core of the offload code and of the relay pump.
 *
 * The pure-Python modules (csum.py, gso.py, gro.py, relay/pump.py) are the reference: every
 * function here produces byte-identical output, and the differential tests check it. Byte
 * loops run without the GIL, on the buffers the callers pass (buffer protocol, no copies).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifndef _WIN32
#include <errno.h>
#include <poll.h>
#include <unistd.h>
#endif

#define MAX_PACKET 65535
#define MAX_UDP_SEGMENTS 64
#define VNET_LEN 10
#define F_NEEDS_CSUM 1
#define GSO_TCPV4 1
#define GSO_TCPV6 4
#define GSO_UDP_L4 5
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* Big-endian 16-bit word sum of data (odd length: a zero byte appended), modulo 0xFFFF:
 * exactly int.from_bytes(data, "big") % 0xFFFF, as csum.ones_sum computes it. */
static uint64_t sum_mod(const uint8_t *p, Py_ssize_t n) {
    /* One's-complement addition does not depend on byte order (RFC 1071): sum native 64-bit
     * words with end-around carry, fold to 16 bits, swap to big-endian once at the end. */
    uint64_t acc = 0;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        acc += w;
        acc += (acc < w); /* end-around carry */
    }
    acc = (acc & 0xFFFFFFFFu) + (acc >> 32);
    acc = (acc & 0xFFFFFFFFu) + (acc >> 32);
    acc = (acc & 0xFFFFu) + (acc >> 16);
    acc = (acc & 0xFFFFu) + (acc >> 16);
    acc = (acc & 0xFFFFu) + (acc >> 16);
#if PY_LITTLE_ENDIAN
    acc = ((acc & 0xFFu) << 8) | (acc >> 8);
#endif
    for (; i + 2 <= n; i += 2) /* the tail, big-endian words (i is even: the bulk took 8s) */
        acc += (uint32_t)p[i] << 8 | p[i + 1];
    if (i < n)
        acc += (uint32_t)p[i] << 8;
    return acc % 0xFFFF;
}

/* ---- checksums ---------------------------------------------------------------------------- */
static PyObject *py_ones_sum(PyObject *self, PyObject *args) {
    Py_buffer view;
    unsigned long long initial = 0;
    if (!PyArg_ParseTuple(args, "y*|K", &view, &initial))
        return NULL;
    uint64_t s;
    Py_BEGIN_ALLOW_THREADS
    s = sum_mod((const uint8_t *)view.buf, view.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong((s + initial % 0xFFFF) % 0xFFFF);
}

/* ---- GSO split ---------------------------------------------------------------------------- */
/* segment(packet, version, iph, proto, hdr_len, gso) -> list[bytes]: the core of gso._segment,
 * after gso.split validated the packet (the same arithmetic as gso.segment_headers). */
static PyObject *py_segment(PyObject *self, PyObject *args) {
    Py_buffer view;
    int version, iph, proto, hdr_len, gso;
    if (!PyArg_ParseTuple(args, "y*iiiii", &view, &version, &iph, &proto, &hdr_len, &gso))
        return NULL;
    const uint8_t *data = (const uint8_t *)view.buf;
    Py_ssize_t n = view.len;
    if (gso <= 0 || hdr_len <= iph || hdr_len > n || iph < 20 || hdr_len > 0xFFFF) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "segment: inconsistent header lengths");
        return NULL;
    }
    Py_ssize_t payload = n - hdr_len;
    Py_ssize_t count = payload ? (payload + gso - 1) / gso : 0;
    PyObject *out = PyList_New(count);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t off = hdr_len + i * (Py_ssize_t)gso;
        Py_ssize_t end = off + gso < n ? off + gso : n;
        PyObject *seg = PyBytes_FromStringAndSize(NULL, hdr_len + (end - off));
        if (seg == NULL) {
            Py_DECREF(out);
            PyBuffer_Release(&view);
            return NULL;
        }
        PyList_SET_ITEM(out, i, seg);
    }
    uint8_t *tmpl = PyMem_Malloc((size_t)hdr_len);
    if (tmpl == NULL) {
        Py_DECREF(out);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    uint8_t **dst = PyMem_Malloc(sizeof(uint8_t *) * (size_t)(count ? count : 1));
    if (dst == NULL) {
        PyMem_Free(tmpl);
        Py_DECREF(out);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < count; i++)
        dst[i] = (uint8_t *)PyBytes_AS_STRING(PyList_GET_ITEM(out, i));

    Py_BEGIN_ALLOW_THREADS
    memcpy(tmpl, data, (size_t)hdr_len);
    uint64_t ip_base = 0, addr_sum;
    uint32_t ident0 = 0;
    if (version == 4) {
        ident0 = be16(tmpl + 4);
        memset(tmpl + 2, 0, 4);
        memset(tmpl + 10, 0, 2);
        ip_base = sum_mod(tmpl, iph);
        addr_sum = (sum_mod(data + 12, 4) + sum_mod(data + 16, 4) + (uint64_t)proto) % 0xFFFF;
    } else {
        addr_sum = (sum_mod(data + 8, 16) + sum_mod(data + 24, 16) + (uint64_t)proto) % 0xFFFF;
    }
    int is_tcp = proto == 6;
    uint32_t seq0 = 0;
    int flags0 = 0, csum_at;
    uint8_t *l4 = tmpl + iph;
    if (is_tcp) {
        seq0 = be32(l4 + 4);
        flags0 = l4[13];
        memset(l4 + 4, 0, 4);
        l4[13] = 0;
        memset(l4 + 16, 0, 2);
        csum_at = iph + 16;
    } else {
        memset(l4 + 4, 0, 4);
        csum_at = iph + 6;
    }
    uint64_t l4_base = (sum_mod(l4, hdr_len - iph) + addr_sum) % 0xFFFF;
    Py_ssize_t last = count - 1;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t off = hdr_len + i * (Py_ssize_t)gso;
        Py_ssize_t end = off + gso < n ? off + gso : n;
        uint8_t *h = dst[i];
        uint64_t total = (uint64_t)(hdr_len + end - off);
        uint64_t l4_len = total - (uint64_t)iph;
        uint64_t payload_sum = sum_mod(data + off, end - off);
        memcpy(h, tmpl, (size_t)hdr_len);
        memcpy(h + hdr_len, data + off, (size_t)(end - off));
        if (version == 4) {
            uint32_t ident = (uint32_t)((ident0 + (uint64_t)i) & 0xFFFF);
            put16(h + 2, (uint32_t)total);
            put16(h + 4, ident);
            put16(h + 10, (uint32_t)(~((ip_base + total + ident) % 0xFFFF) & 0xFFFF));
        } else {
            put16(h + 4, (uint32_t)(total - 40));
        }
        uint32_t csum;
        if (is_tcp) {
            uint32_t seq = (uint32_t)((seq0 + (uint64_t)i * (uint64_t)gso) & 0xFFFFFFFFu);
            int flags = flags0;
            if (i != last)
                flags &= ~(TCP_FIN | TCP_PSH);
            if (i)
                flags &= ~TCP_CWR;
            put32(h + iph + 4, seq);
            h[iph + 13] = (uint8_t)flags;
            uint64_t s = l4_base + (seq >> 16) + (seq & 0xFFFF) + (uint64_t)flags + l4_len + payload_sum;
            csum = (uint32_t)(~(s % 0xFFFF) & 0xFFFF);
        } else {
            put16(h + iph + 4, (uint32_t)l4_len);
            csum = (uint32_t)(~((l4_base + 2 * l4_len + payload_sum) % 0xFFFF) & 0xFFFF);
            if (csum == 0)
                csum = 0xFFFF; /* UDP: 0 means "no checksum" */
        }
        put16(h + csum_at, csum);
    }
    Py_END_ALLOW_THREADS

    PyMem_Free(dst);
    PyMem_Free(tmpl);
    PyBuffer_Release(&view);
    return out;
}

/* ---- GRO coalesce ------------------------------------------------------------------------- */
/* coalesce_ip(packets, udp_gro) -> list[(index, bytes)]: gro._coalesce_ip, the same rules in the
 * same order (candidates, checksum check, per-flow items, append/prepend, the 64 KiB cap). */

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
    int version, iph, l4h; /* l4h 0: not a candidate */
    int ok;
} Pkt;

typedef struct {
    int tcp;
    int version, iph, hlen;
    int head;  /* index of the packet whose headers lead the output */
    int origin;  /* index of the packet that made the item: where its output stands */
    int first_chunk, last_chunk;  /* packet indexes: the chunks in stream order, linked by next[] */
    uint32_t seq;
    int psh;
    uint8_t ipattr[5];
    int ipattr_len;
    const uint8_t *opts;
    int opts_len;
    Py_ssize_t plen, gso;
    int merged;
    uint8_t key[48];
    int key_len;
    int bucket_next;  /* next item in the same hash bucket, -1 */
    int older;  /* the previous item of the same TCP key (for the newest-first scan), -1 */
} Item;

#define NBUCKETS 256

static uint32_t fnv(const uint8_t *k, int n) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < n; i++) {
        h ^= k[i];
        h *= 16777619u;
    }
    return h % NBUCKETS;
}

static void classify(Pkt *k, int udp_gro) {
    const uint8_t *p = k->p;
    Py_ssize_t n = k->n;
    k->l4h = 0;
    if (n < 28 || n > MAX_PACKET)
        return;
    int b0 = p[0], proto, iph;
    if (b0 == 0x45) {
        if (be16(p + 2) != n || (p[6] & 0x3F) || p[7])
            return;
        proto = p[9];
        iph = 20;
    } else if ((b0 >> 4) == 6) {
        if (be16(p + 4) != n - 40)
            return;
        proto = p[6];
        iph = 40;
    } else {
        return;
    }
    k->version = b0 >> 4;
    k->iph = iph;
    if (proto == 6) {
        if (n < iph + 20)
            return;
        int thl = (p[iph + 12] >> 4) * 4;
        int flags = p[iph + 13];
        if (thl < 20 || n <= iph + thl || (flags != TCP_ACK && flags != (TCP_ACK | TCP_PSH)))
            return;
        k->l4h = thl;
        return;
    }
    if (proto == 17 && udp_gro) {
        if (n <= iph + 8 || be16(p + iph + 4) != n - iph)
            return;
        if (b0 == 0x45 && p[iph + 6] == 0 && p[iph + 7] == 0)
            return; /* IPv4 UDP without checksum: never merged */
        k->l4h = 8;
    }
}

static int checksums_ok(const Pkt *k) {
    const uint8_t *p = k->p;
    int iph = k->iph;
    uint64_t addrs;
    int proto;
    if (iph == 20) {
        if (sum_mod(p, 20) != 0)
            return 0;
        addrs = sum_mod(p + 12, 8);
        proto = p[9];
    } else {
        addrs = sum_mod(p + 8, 32);
        proto = p[6];
    }
    uint64_t pseudo = addrs + (uint64_t)proto + (uint64_t)(k->n - iph);
    return (sum_mod(p + iph, k->n - iph) + pseudo) % 0xFFFF == 0;
}

/* find the newest item of a key in a bucket chain, or -1 */
static int lookup(const Item *items, int bucket_head, const uint8_t *key, int key_len) {
    for (int j = bucket_head; j >= 0; j = items[j].bucket_next)
        if (items[j].key_len == key_len && !memcmp(items[j].key, key, (size_t)key_len))
            return j;
    return -1;
}

/* take item `it` out of a bucket chain */
static void unlink_item(Item *items, int *bucket, int it) {
    int *link = bucket;
    while (*link != it)
        link = &items[*link].bucket_next;
    *link = items[it].bucket_next;
}

static void new_item(Item *it, const Pkt *k, int i, int tcp, int hlen, Py_ssize_t plen, uint32_t seqno,
                     int psh, const uint8_t *ipattr, int ipattr_len, const uint8_t *opts, int opts_len,
                     const uint8_t *key, int key_len) {
    memset(it, 0, sizeof(Item));
    it->tcp = tcp;
    it->version = k->version;
    it->iph = k->iph;
    it->hlen = hlen;
    it->head = i;
    it->origin = i;
    it->first_chunk = it->last_chunk = i;
    it->seq = seqno;
    it->psh = psh;
    memcpy(it->ipattr, ipattr, (size_t)ipattr_len);
    it->ipattr_len = ipattr_len;
    it->opts = opts;
    it->opts_len = opts_len;
    it->plen = plen;
    it->gso = plen;
    memcpy(it->key, key, (size_t)key_len);
    it->key_len = key_len;
    it->older = -1;
}

/* The merge pass: entries[] gets, per output in input order, an item index, or -2 - i for a
 * packet that goes out alone; merged packets make no entry. Returns the number of entries. */
static int merge(Pkt *pk, int cnt, int udp_gro, Item *items, int *entries, int *next) {
    int buckets_tcp[NBUCKETS], buckets_udp[NBUCKETS];
    for (int b = 0; b < NBUCKETS; b++)
        buckets_tcp[b] = buckets_udp[b] = -1;
    for (int i = 0; i < cnt; i++) {
        classify(&pk[i], udp_gro);
        pk[i].ok = pk[i].l4h ? checksums_ok(&pk[i]) : 0;
        next[i] = -1;
    }
    int nitems = 0, nentries = 0;
    for (int i = 0; i < cnt; i++) {
        const Pkt *k = &pk[i];
        const uint8_t *p = k->p;
        if (!k->l4h || !k->ok) {
            entries[nentries++] = -2 - i;
            continue;
        }
        int iph = k->iph, hlen = k->iph + k->l4h;
        Py_ssize_t plen = k->n - hlen;
        uint8_t ipattr[5], key[48];
        int ipattr_len, key_len;
        if (k->version == 4) {
            ipattr[0] = p[1];
            ipattr[1] = (uint8_t)(p[6] >> 5);
            ipattr[2] = p[8];
            ipattr_len = 3;
            memcpy(key, p + 12, 8);
            key_len = 8;
        } else {
            memcpy(ipattr, p, 4);
            ipattr[4] = p[7];
            ipattr_len = 5;
            memcpy(key, p + 8, 32);
            key_len = 32;
        }
        memcpy(key + key_len, p + iph, 4); /* ports */
        key_len += 4;
        if (k->l4h == 8) { /* UDP: only the newest item of the flow is a candidate */
            uint32_t h = fnv(key, key_len);
            int found = lookup(items, buckets_udp[h], key, key_len);
            if (found >= 0) {
                Item *it = &items[found];
                if (it->ipattr_len == ipattr_len && !memcmp(it->ipattr, ipattr, (size_t)ipattr_len)
                    && it->plen % it->gso == 0 && plen <= it->gso && it->merged + 1 < MAX_UDP_SEGMENTS
                    && hlen + it->plen + plen <= MAX_PACKET) {
                    next[it->last_chunk] = i;
                    it->last_chunk = i;
                    it->plen += plen;
                    it->merged += 1;
                    continue;
                }
                unlink_item(items, &buckets_udp[h], found); /* the new item replaces it */
            }
            new_item(&items[nitems], k, i, 0, hlen, plen, 0, 0, ipattr, ipattr_len, NULL, 0, key, key_len);
            items[nitems].bucket_next = buckets_udp[h];
            buckets_udp[h] = nitems;
            entries[nentries++] = nitems++;
            continue;
        }
        memcpy(key + key_len, p + iph + 8, 4); /* TCP: the ACK number is part of the flow */
        key_len += 4;
        uint32_t seqno = be32(p + iph + 4);
        int psh = (p[iph + 13] & TCP_PSH) != 0;
        const uint8_t *opts = p + iph + 20;
        int opts_len = hlen - iph - 20;
        uint32_t h = fnv(key, key_len) ^ 1u;
        h %= NBUCKETS;
        int newest = lookup(items, buckets_tcp[h], key, key_len);
        int done = 0;
        for (int j = newest; j >= 0 && !done; j = items[j].older) {
            Item *it = &items[j];
            if (it->hlen != hlen || it->opts_len != opts_len || memcmp(it->opts, opts, (size_t)opts_len)
                || it->ipattr_len != ipattr_len || memcmp(it->ipattr, ipattr, (size_t)ipattr_len))
                continue;
            if (hlen + it->plen + plen > MAX_PACKET)
                continue;
            if (seqno == (uint32_t)((it->seq + (uint64_t)it->plen) & 0xFFFFFFFFu)) { /* append */
                if (it->psh || it->plen % it->gso || plen > it->gso)
                    continue;
                next[it->last_chunk] = i;
                it->last_chunk = i;
                it->plen += plen;
                it->psh = psh;
            } else if ((uint32_t)((seqno + (uint64_t)plen) & 0xFFFFFFFFu) == it->seq) { /* prepend */
                if (psh || plen < it->gso || (plen > it->gso && it->merged))
                    continue;
                next[i] = it->first_chunk;
                it->first_chunk = i;
                it->head = i;
                it->seq = seqno;
                it->plen += plen;
                it->gso = plen;
            } else {
                continue;
            }
            it->merged += 1;
            done = 1;
        }
        if (done)
            continue;
        new_item(&items[nitems], k, i, 1, hlen, plen, seqno, psh, ipattr, ipattr_len, opts, opts_len, key,
                 key_len);
        items[nitems].older = newest;
        if (newest >= 0)
            unlink_item(items, &buckets_tcp[h], newest); /* the newest item of a key is the one in the chain */
        items[nitems].bucket_next = buckets_tcp[h];
        buckets_tcp[h] = nitems;
        entries[nentries++] = nitems++;
    }
    return nentries;
}

static Py_ssize_t entry_size(const Pkt *pk, const Item *items, int e) {
    if (e <= -2)
        return VNET_LEN + pk[-2 - e].n;
    const Item *it = &items[e];
    if (it->merged == 0)
        return VNET_LEN + pk[it->head].n;
    return VNET_LEN + it->hlen + it->plen;
}

static void put_vnet(uint8_t *o, int flags, int gso_type, int hdr_len, int gso_size, int csum_start,
                     int csum_offset) {
    /* struct virtio_net_hdr in native byte order (HDR_STRUCT "=BBHHHH") */
    uint16_t f[4] = {(uint16_t)hdr_len, (uint16_t)gso_size, (uint16_t)csum_start, (uint16_t)csum_offset};
    o[0] = (uint8_t)flags;
    o[1] = (uint8_t)gso_type;
    memcpy(o + 2, f, 8);
}

static void emit(const Pkt *pk, const Item *items, int e, const int *next, uint8_t *o) {
    if (e <= -2 || items[e].merged == 0) {
        const Pkt *k = e <= -2 ? &pk[-2 - e] : &pk[items[e].head];
        memset(o, 0, VNET_LEN);
        memcpy(o + VNET_LEN, k->p, (size_t)k->n);
        return;
    }
    const Item *it = &items[e];
    const Pkt *head = &pk[it->head];
    int iph = it->iph, hlen = it->hlen;
    uint8_t *h = o + VNET_LEN;
    memcpy(h, head->p, (size_t)hlen);
    uint64_t total = (uint64_t)(hlen + it->plen), l4_len = total - (uint64_t)iph, addrs;
    int proto;
    if (it->version == 4) {
        put16(h + 2, (uint32_t)total);
        h[10] = h[11] = 0;
        put16(h + 10, (uint32_t)(~sum_mod(h, 20) & 0xFFFF));
        addrs = sum_mod(h + 12, 8);
        proto = h[9];
    } else {
        put16(h + 4, (uint32_t)l4_len);
        addrs = sum_mod(h + 8, 32);
        proto = h[6];
    }
    /* CHECKSUM_PARTIAL: the field holds the folded (not complemented) pseudo-header sum */
    uint32_t pseudo = (uint32_t)((addrs + (uint64_t)proto + l4_len) % 0xFFFF);
    int gso_type, csum_offset;
    if (it->tcp) {
        if (it->psh)
            h[iph + 13] |= TCP_PSH;
        put16(h + iph + 16, pseudo);
        gso_type = it->version == 4 ? GSO_TCPV4 : GSO_TCPV6;
        csum_offset = 16;
    } else {
        put16(h + iph + 4, (uint32_t)l4_len);
        put16(h + iph + 6, pseudo);
        gso_type = GSO_UDP_L4;
        csum_offset = 6;
    }
    put_vnet(o, F_NEEDS_CSUM, gso_type, hlen, (int)it->gso, iph, csum_offset);
    uint8_t *w = h + hlen;
    for (int c = it->first_chunk; c >= 0; c = next[c]) {
        const Pkt *k = &pk[c];
        Py_ssize_t n = k->n - hlen;
        memcpy(w, k->p + hlen, (size_t)n);
        w += n;
        if (c == it->last_chunk)
            break;
    }
}

static PyObject *py_coalesce_ip(PyObject *self, PyObject *args) {
    PyObject *seq_obj;
    int udp_gro = 0;
    Py_ssize_t offset = 0;
    if (!PyArg_ParseTuple(args, "O|pn", &seq_obj, &udp_gro, &offset))
        return NULL;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "coalesce: offset must be >= 0");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(seq_obj, "coalesce: packets must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (count > 0x3FFFFFFF) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "coalesce: too many packets in one batch");
        return NULL;
    }
    int cnt = (int)count, got = 0, nentries = 0;
    size_t slots = (size_t)(cnt ? cnt : 1);
    Py_buffer *views = PyMem_Calloc(slots, sizeof(Py_buffer));
    Pkt *pk = PyMem_Calloc(slots, sizeof(Pkt));
    Item *items = PyMem_Calloc(slots, sizeof(Item));
    int *entries = PyMem_Malloc(sizeof(int) * slots);
    int *next = PyMem_Malloc(sizeof(int) * slots);
    uint8_t **dest = PyMem_Calloc(slots, sizeof(uint8_t *));
    PyObject *result = NULL;
    if (!views || !pk || !items || !entries || !next || !dest) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < cnt; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE) < 0)
            goto done;
        Py_ssize_t skip = offset < views[got].len ? offset : views[got].len; /* like buf[offset:] */
        pk[got].p = (const uint8_t *)views[got].buf + skip;
        pk[got].n = views[got].len - skip;
    }
    Py_BEGIN_ALLOW_THREADS
    nentries = merge(pk, cnt, udp_gro, items, entries, next);
    Py_END_ALLOW_THREADS
    result = PyList_New(nentries);
    if (result == NULL)
        goto done;
    for (int e = 0; e < nentries; e++) {
        int ent = entries[e];
        int first = ent <= -2 ? -2 - ent : items[ent].origin; /* where the output stands */
        PyObject *frame = PyBytes_FromStringAndSize(NULL, entry_size(pk, items, ent));
        if (frame == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        dest[e] = (uint8_t *)PyBytes_AS_STRING(frame);
        PyObject *pos = PyLong_FromLong(first);
        PyObject *pair = pos ? PyTuple_Pack(2, pos, frame) : NULL;
        Py_XDECREF(pos);
        Py_DECREF(frame);
        if (pair == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, e, pair);
    }
    Py_BEGIN_ALLOW_THREADS
    for (int e = 0; e < nentries; e++)
        emit(pk, items, entries[e], next, dest[e]);
    Py_END_ALLOW_THREADS
done:
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(pk);
    PyMem_Free(items);
    PyMem_Free(entries);
    PyMem_Free(next);
    PyMem_Free(dest);
    Py_DECREF(seq);
    return result;
}


/* ---- recv_multiple's copy into the caller's buffers ------------------------------------------ */
/* drain(pending, bufs, sizes, offset) -> int: batch.RxQueue.drain_into (deque of bytes in, the
 * same rules: stop at the first packet that does not fit, an error if it is the first). */
static PyObject *py_drain(PyObject *self, PyObject *args) {
    PyObject *pending, *bufs, *sizes;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "OOOn", &pending, &bufs, &sizes, &offset))
        return NULL;
    PyObject *bufs_fast = PySequence_Fast(bufs, "bufs must be a sequence");
    if (bufs_fast == NULL)
        return NULL;
    Py_ssize_t nbufs = PySequence_Fast_GET_SIZE(bufs_fast), count = 0;
    PyObject *popleft = PyObject_GetAttrString(pending, "popleft");
    if (popleft == NULL) {
        Py_DECREF(bufs_fast);
        return NULL;
    }
    while (count < nbufs) {
        Py_ssize_t left = PyObject_Length(pending);
        if (left < 0)
            goto fail;
        if (left == 0)
            break;
        PyObject *pkt = PySequence_GetItem(pending, 0);
        if (pkt == NULL)
            goto fail;
        Py_buffer src, dst;
        if (PyObject_GetBuffer(pkt, &src, PyBUF_SIMPLE) < 0) {
            Py_DECREF(pkt);
            goto fail;
        }
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(bufs_fast, count), &dst, PyBUF_WRITABLE) < 0) {
            PyBuffer_Release(&src);
            Py_DECREF(pkt);
            goto fail;
        }
        Py_ssize_t room = dst.len - offset;
        if (room < src.len) {
            Py_ssize_t need = src.len;
            PyBuffer_Release(&dst);
            PyBuffer_Release(&src);
            Py_DECREF(pkt);
            if (count)
                break; /* deliver what fits now; the rest waits for the next call */
            PyErr_Format(PyExc_ValueError,
                         "bufs[0] holds %zd bytes after offset %zd but the next packet has %zd: "
                         "give buffers of at least %zd bytes",
                         room, offset, need, need + offset);
            goto fail;
        }
        memcpy((uint8_t *)dst.buf + offset, src.buf, (size_t)src.len);
        PyObject *size = PyLong_FromSsize_t(src.len);
        PyBuffer_Release(&dst);
        PyBuffer_Release(&src);
        Py_DECREF(pkt);
        if (size == NULL || PySequence_SetItem(sizes, count, size) < 0) {
            Py_XDECREF(size);
            goto fail;
        }
        Py_DECREF(size);
        PyObject *gone = PyObject_CallNoArgs(popleft);
        if (gone == NULL)
            goto fail;
        Py_DECREF(gone);
        count++;
    }
    Py_DECREF(popleft);
    Py_DECREF(bufs_fast);
    return PyLong_FromSsize_t(count);
fail:
    Py_DECREF(popleft);
    Py_DECREF(bufs_fast);
    return NULL;
}

/* ---- the relay pump ----------------------------------------------------------------------- */
#ifndef _WIN32
/* the device went away (closed fd, removed interface) */
static int gone(int e) {
#ifdef EBADFD
    if (e == EBADFD)
        return 1;
#endif
    return e == EBADF;
}

enum { W_FRAMES_IN, W_FRAMES_OUT, W_BYTES_IN, W_BYTES_OUT, W_SUPERS, W_DROPPED, W_DROPPED_BYTES, W_READY };

/* wait until fd is ready (events) or stop_fd readable: 1 ready, 0 stop, -1 error */
static int wait_fd(int fd, short events, int stop_fd) {
    struct pollfd fds[2] = {{fd, events, 0}, {stop_fd, POLLIN, 0}};
    for (;;) {
        int r = poll(fds, stop_fd >= 0 ? 2 : 1, -1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (stop_fd >= 0 && fds[1].revents)
            return 0;
        if (fds[0].revents & (POLLNVAL))
            return -1;
        if (fds[0].revents)
            return 1;
    }
}

/* pump(fd_in, fd_out, read_size, counters, vnet, stop_fd, drop_when_full) -> None
 * relay/pump.py's fast loop, with the GIL released: read a frame, write it, count reads and
 * drops (frames and bytes out are derived). Returns when stop_fd becomes readable, a device
 * goes away (EBADF/EBADFD) or read returns 0; other read errors raise OSError. */
static PyObject *py_pump(PyObject *self, PyObject *args) {
    int fd_in, fd_out, vnet, stop_fd, drop;
    Py_ssize_t size;
    Py_buffer counters;
    if (!PyArg_ParseTuple(args, "iinw*pip", &fd_in, &fd_out, &size, &counters, &vnet, &stop_fd, &drop))
        return NULL;
    if (counters.len < (Py_ssize_t)(8 * sizeof(uint64_t)) || size <= 0) {
        PyBuffer_Release(&counters);
        PyErr_SetString(PyExc_ValueError, "pump: counters need 8 64-bit words and read_size > 0");
        return NULL;
    }
    volatile uint64_t *w = (volatile uint64_t *)counters.buf;
    uint8_t *buf = PyMem_RawMalloc((size_t)size);
    if (buf == NULL) {
        PyBuffer_Release(&counters);
        return PyErr_NoMemory();
    }
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    w[W_READY] = 2; /* out = in - dropped */
    unsigned tick = 0;
    for (;;) {
        if (stop_fd >= 0 && (++tick & 63) == 0) { /* busy source: look for a stop now and then */
            struct pollfd s = {stop_fd, POLLIN, 0};
            if (poll(&s, 1, 0) > 0)
                break;
        }
        ssize_t n = read(fd_in, buf, (size_t)size);
        if (n < 0) {
            if (errno == EAGAIN) {
                int r = wait_fd(fd_in, POLLIN, stop_fd);
                if (r == 1)
                    continue;
                if (r < 0)
                    err = errno;
                break;
            }
            if (errno == EINTR)
                continue;
            if (!gone(errno))
                err = errno;
            break;
        }
        if (n == 0)
            break;
        w[W_FRAMES_IN] += 1;
        w[W_BYTES_IN] += (uint64_t)n;
        if (vnet && n > 1 && buf[1])
            w[W_SUPERS] += 1;
        for (;;) {
            ssize_t m = write(fd_out, buf, (size_t)n);
            if (m >= 0)
                break;
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN && !drop) {
                int r = wait_fd(fd_out, POLLOUT, stop_fd);
                if (r == 1)
                    continue;
                goto out;
            }
            if (gone(errno))
                goto out;
            w[W_DROPPED] += 1; /* a full queue, a peer that is down, a refused frame */
            w[W_DROPPED_BYTES] += (uint64_t)n;
            break;
        }
    }
out:
    Py_END_ALLOW_THREADS
    PyMem_RawFree(buf);
    PyBuffer_Release(&counters);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}
#endif

static PyMethodDef methods[] = {
    {"ones_sum", py_ones_sum, METH_VARARGS,
     "ones_sum(data, initial=0) -> int: the one's-complement sum of data, modulo 0xFFFF"},
    {"segment", py_segment, METH_VARARGS,
     "segment(packet, version, iph, proto, hdr_len, gso) -> list[bytes]: GSO segments with checksums"},
    {"coalesce_ip", py_coalesce_ip, METH_VARARGS,
     "coalesce_ip(packets, udp_gro=False, offset=0) -> list[(index, frame)]: GRO over packets[i][offset:]"},
    {"drain", py_drain, METH_VARARGS,
     "drain(pending, bufs, sizes, offset) -> int: queued packets into the caller's buffers"},
#ifndef _WIN32
    {"pump", py_pump, METH_VARARGS,
     "pump(fd_in, fd_out, read_size, counters, vnet, stop_fd, drop) -> None: a relay direction"},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fast", "The compiled offload core and relay pump of tunlab.", -1, methods,
};

PyMODINIT_FUNC PyInit__fast(void) { return PyModule_Create(&module); }
