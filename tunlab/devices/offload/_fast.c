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
static uint64_t fold_native(uint64_t acc) {
    acc = (acc & 0xFFFFFFFFu) + (acc >> 32);
    acc = (acc & 0xFFFFFFFFu) + (acc >> 32);
    acc = (acc & 0xFFFFu) + (acc >> 16);
    acc = (acc & 0xFFFFu) + (acc >> 16);
    acc = (acc & 0xFFFFu) + (acc >> 16);
#if PY_LITTLE_ENDIAN
    acc = ((acc & 0xFFu) << 8) | (acc >> 8);
#endif
    return acc;
}

static uint64_t sum_mod(const uint8_t *p, Py_ssize_t n) {
    /* One's-complement addition does not depend on byte order (RFC 1071): sum native 32-bit
     * words into 64-bit accumulators (no carries to chase; four lanes the compiler can keep in
     * vector registers), fold to 16 bits, swap to big-endian once at the end. */
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint32_t w[4];
        memcpy(w, p + i, 16);
        a0 += w[0];
        a1 += w[1];
        a2 += w[2];
        a3 += w[3];
    }
    for (; i + 4 <= n; i += 4) {
        uint32_t w;
        memcpy(&w, p + i, 4);
        a0 += w;
    }
    uint64_t acc = fold_native(a0 + a1 + a2 + a3);
    for (; i + 2 <= n; i += 2) /* the tail, big-endian words (i is even: the bulk took 4s) */
        acc += (uint32_t)p[i] << 8 | p[i + 1];
    if (i < n)
        acc += (uint32_t)p[i] << 8;
    return acc % 0xFFFF;
}

/* sum_mod(src, n) while copying src to dst: one pass over the bytes instead of two (the split
 * copies each segment's payload and needs its sum for the TCP/UDP checksum). */
static uint64_t sum_mod_copy(uint8_t *dst, const uint8_t *src, Py_ssize_t n) {
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint32_t w[4];
        memcpy(w, src + i, 16);
        memcpy(dst + i, w, 16);
        a0 += w[0];
        a1 += w[1];
        a2 += w[2];
        a3 += w[3];
    }
    for (; i + 4 <= n; i += 4) {
        uint32_t w;
        memcpy(&w, src + i, 4);
        memcpy(dst + i, &w, 4);
        a0 += w;
    }
    uint64_t acc = fold_native(a0 + a1 + a2 + a3);
    for (; i + 2 <= n; i += 2) {
        dst[i] = src[i];
        dst[i + 1] = src[i + 1];
        acc += (uint32_t)src[i] << 8 | src[i + 1];
    }
    if (i < n) {
        dst[i] = src[i];
        acc += (uint32_t)src[i] << 8;
    }
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
/* Segments first..stop-1 (of count) of a validated super-packet: segment i goes to dst[i - first],
 * after l2 bytes of link header (TAP) copied from link. tmpl: hdr_len bytes of scratch. */
static void make_segments(const uint8_t *data, Py_ssize_t n, int version, int iph, int proto, int hdr_len,
                          int gso, Py_ssize_t first, Py_ssize_t stop, uint8_t *const *dst, uint8_t *tmpl,
                          const uint8_t *link, int l2) {
    Py_ssize_t count = (n - hdr_len + gso - 1) / gso;
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
    for (Py_ssize_t i = first; i < stop; i++) {
        Py_ssize_t off = hdr_len + i * (Py_ssize_t)gso;
        Py_ssize_t end = off + gso < n ? off + gso : n;
        if (l2)
            memcpy(dst[i - first], link, (size_t)l2);
        uint8_t *h = dst[i - first] + l2;
        uint64_t total = (uint64_t)(hdr_len + end - off);
        uint64_t l4_len = total - (uint64_t)iph;
        memcpy(h, tmpl, (size_t)hdr_len);
        uint64_t payload_sum = sum_mod_copy(h + hdr_len, data + off, end - off);
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
}

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
    make_segments(data, n, version, iph, proto, hdr_len, gso, 0, count, dst, tmpl, NULL, 0);
    Py_END_ALLOW_THREADS

    PyMem_Free(dst);
    PyMem_Free(tmpl);
    PyBuffer_Release(&view);
    return out;
}

/* ---- split into the caller's buffers ---------------------------------------------------------- */
typedef struct {
    const uint8_t *pkt; /* the IP packet (TAP: the Ethernet frame) after the virtio-net header */
    Py_ssize_t n;
    int gso_none, needs_csum, csum_start, csum_offset;
    int version, iph, proto, hdr_len, gso, l2;
    Py_ssize_t count; /* how many packets the frame stands for */
} SplitPlan;

#define MAX_SPLIT_HEADERS 1024

/* What split()/split_frame() make of a frame read from an offload device. 0: not planned here
 * (malformed or unusual: the reference code decides, and words the error). */
static int plan_split(const uint8_t *f, Py_ssize_t flen, int tap, SplitPlan *sp) {
    if (flen <= VNET_LEN)
        return 0;
    uint16_t v[4];
    memcpy(v, f + 2, 8); /* hdr_len, gso_size, csum_start, csum_offset: native byte order */
    int gso_type = f[1] & 0x7F; /* without the ECN bit */
    const uint8_t *p = f + VNET_LEN;
    Py_ssize_t n = flen - VNET_LEN;
    memset(sp, 0, sizeof(*sp));
    sp->pkt = p;
    sp->n = n;
    if (gso_type == 0) {
        sp->gso_none = 1;
        sp->count = 1;
        if (f[0] & F_NEEDS_CSUM) {
            sp->needs_csum = 1;
            sp->csum_start = v[2];
            sp->csum_offset = v[3];
            if (sp->csum_start >= n || (Py_ssize_t)sp->csum_start + sp->csum_offset + 2 > n)
                return 0;
        }
        return 1;
    }
    if (gso_type != GSO_TCPV4 && gso_type != GSO_TCPV6 && gso_type != GSO_UDP_L4)
        return 0;
    int gso = v[1];
    if (gso == 0)
        return 0;
    int l2 = 0;
    if (tap) {
        Py_ssize_t off = 12;
        while (n >= off + 2 && (be16(p + off) == 0x8100 || be16(p + off) == 0x88A8))
            off += 4;
        if (n < off + 2)
            return 0;
        l2 = (int)off + 2;
        p += l2;
        n -= l2;
    }
    if (n < 1)
        return 0;
    int version = p[0] >> 4, iph, proto;
    if (version == 4) {
        if (n < 20)
            return 0;
        iph = (p[0] & 0x0F) * 4;
        if (iph < 20 || iph > n)
            return 0;
        proto = p[9];
    } else if (version == 6) {
        if (n < 40)
            return 0;
        int nh = p[6];
        Py_ssize_t off = 40;
        while (nh == 0 || nh == 43 || nh == 60 || nh == 51 || nh == 44) {
            if (off + 8 > n || nh == 44)
                return 0;
            Py_ssize_t ext = nh == 51 ? (p[off + 1] + 2) * 4 : (p[off + 1] + 1) * 8;
            nh = p[off];
            off += ext;
        }
        if (off > n)
            return 0;
        iph = (int)off;
        proto = nh;
    } else {
        return 0;
    }
    if ((gso_type == GSO_TCPV4 && version != 4) || (gso_type == GSO_TCPV6 && version != 6))
        return 0;
    int hdr_len;
    if (gso_type == GSO_UDP_L4) {
        if (proto != 17)
            return 0;
        hdr_len = iph + 8;
    } else {
        if (proto != 6 || n < iph + 20)
            return 0;
        int thl = (p[iph + 12] >> 4) * 4;
        if (thl < 20)
            return 0;
        hdr_len = iph + thl;
    }
    if (n <= hdr_len || hdr_len > MAX_SPLIT_HEADERS)
        return 0;
    if (version == 4 && iph + (n - hdr_len) > 0xFFFF)
        return 0;
    Py_ssize_t longest = hdr_len + (gso < n - hdr_len ? gso : n - hdr_len);
    if ((version == 4 && longest > 0xFFFF) || (version == 6 && longest - 40 > 0xFFFF)
        || (proto == 17 && longest - iph > 0xFFFF))
        return 0;
    sp->pkt = p;
    sp->n = n;
    sp->version = version;
    sp->iph = iph;
    sp->proto = proto;
    sp->hdr_len = hdr_len;
    sp->gso = gso;
    sp->l2 = l2;
    sp->count = (n - hdr_len + gso - 1) / gso;
    return 1;
}

/* the length of packet i of a plan, link header included */
static Py_ssize_t planned_len(const SplitPlan *sp, Py_ssize_t i) {
    if (sp->gso_none)
        return sp->n;
    Py_ssize_t off = sp->hdr_len + i * (Py_ssize_t)sp->gso, end = off + sp->gso;
    return sp->l2 + sp->hdr_len + (end < sp->n ? end : sp->n) - off;
}

/* write the planned packets start..start+k-1 to ptrs[0..k-1] (no GIL needed): a GSO_NONE
 * packet copied with its checksum completed, or the segments of a super-packet */
static void write_planned(const SplitPlan *sp, Py_ssize_t start, Py_ssize_t k, uint8_t *const *ptrs) {
    if (k <= 0)
        return;
    if (sp->gso_none) {
        uint8_t *c = ptrs[0];
        memcpy(c, sp->pkt, (size_t)sp->n);
        if (sp->needs_csum) {
            Py_ssize_t at = (Py_ssize_t)sp->csum_start + sp->csum_offset;
            uint64_t initial = be16(c + at);
            c[at] = c[at + 1] = 0;
            uint64_t s = (sum_mod(c + sp->csum_start, sp->n - sp->csum_start) + initial % 0xFFFF) % 0xFFFF;
            put16(c + at, (uint32_t)(~s & 0xFFFF));
        }
        return;
    }
    uint8_t tmpl[MAX_SPLIT_HEADERS];
    make_segments(sp->pkt, sp->n, sp->version, sp->iph, sp->proto, sp->hdr_len, sp->gso, start, start + k, ptrs,
                  tmpl, sp->pkt - sp->l2, sp->l2);
}

/* sizes[i] = v, for a list (any mutable sequence) or a writable buffer of 4- or 8-byte ints */
static int put_size(PyObject *sizes, Py_buffer *sv, Py_ssize_t i, Py_ssize_t v) {
    if (sv->buf != NULL) {
        if (sv->itemsize == 4) {
            uint32_t x = (uint32_t)v;
            memcpy((uint8_t *)sv->buf + 4 * i, &x, 4);
        } else {
            uint64_t x = (uint64_t)v;
            memcpy((uint8_t *)sv->buf + 8 * i, &x, 8);
        }
        return 0;
    }
    PyObject *o = PyLong_FromSsize_t(v);
    if (o == NULL)
        return -1;
    int r = PySequence_SetItem(sizes, i, o);
    Py_DECREF(o);
    return r;
}

/* sizes as a buffer (sv->buf set, its length in entries) or as a sequence (sv->buf NULL) */
static Py_ssize_t open_sizes(PyObject *sizes, Py_buffer *sv, int writable) {
    memset(sv, 0, sizeof(*sv));
    if (PyObject_CheckBuffer(sizes)) {
        if (PyObject_GetBuffer(sizes, sv, (writable ? PyBUF_WRITABLE : 0) | PyBUF_FORMAT) < 0)
            return -1;
        if ((sv->itemsize != 4 && sv->itemsize != 8) || sv->format == NULL
            || strchr("IiLlQqNn", sv->format[sv->format[0] == '@' || sv->format[0] == '=' ? 1 : 0]) == NULL) {
            PyBuffer_Release(sv);
            sv->buf = NULL;
            PyErr_SetString(PyExc_TypeError, "sizes: expected a list or an array of ints ('I', 'L' or 'Q')");
            return -1;
        }
        return sv->len / sv->itemsize;
    }
    return PySequence_Size(sizes);
}

static Py_ssize_t get_size(PyObject *sizes, Py_buffer *sv, Py_ssize_t i) {
    if (sv->buf != NULL) {
        if (sv->itemsize == 4) {
            uint32_t x;
            memcpy(&x, (uint8_t *)sv->buf + 4 * i, 4);
            return (Py_ssize_t)x;
        }
        uint64_t x;
        memcpy(&x, (uint8_t *)sv->buf + 8 * i, 8);
        return x > (uint64_t)PY_SSIZE_T_MAX ? -1 : (Py_ssize_t)x;
    }
    PyObject *o = PySequence_GetItem(sizes, i);
    if (o == NULL)
        return -2;
    Py_ssize_t v = PyLong_AsSsize_t(o);
    Py_DECREF(o);
    if (v == -1 && PyErr_Occurred())
        return -2;
    return v;
}

/* split_into(frame, start, dest, sizes, offset, slot, tap) -> (delivered, next, need) | None
 * The packets `frame` (virtio-net header + super-packet, as read) stands for, from packet
 * `start` on, written straight into the caller's buffers at `offset`: dest is a sequence of
 * writable buffers (slot 0) or one arena of slot-byte slots. Stops at the first packet that does
 * not fit. next: the packet to deliver next (-1: all delivered); need: its length. None: the
 * frame is malformed or unusual, and the reference split decides. The bytes match split(). */
static PyObject *py_split_into(PyObject *self, PyObject *args) {
    Py_buffer fv, sv;
    PyObject *dest, *sizes;
    Py_ssize_t start, offset, slot;
    int tap;
    if (!PyArg_ParseTuple(args, "y*nOOnnp", &fv, &start, &dest, &sizes, &offset, &slot, &tap))
        return NULL;
    SplitPlan sp;
    if (!plan_split((const uint8_t *)fv.buf, fv.len, tap, &sp) || start < 0 || offset < 0) {
        PyBuffer_Release(&fv);
        Py_RETURN_NONE;
    }
    Py_ssize_t nsizes = open_sizes(sizes, &sv, 1);
    if (nsizes < 0) {
        PyBuffer_Release(&fv);
        return NULL;
    }
    Py_buffer arena = {0};
    PyObject *seq = NULL;
    Py_buffer *views = NULL;
    uint8_t **ptrs = NULL;
    PyObject *result = NULL;
    Py_ssize_t want = sp.count - start, room_slots, k = 0, nviews = 0;
    if (want < 0)
        want = 0;
    if (slot > 0) {
        if (PyObject_GetBuffer(dest, &arena, PyBUF_WRITABLE) < 0)
            goto done;
        room_slots = arena.len / slot;
    } else {
        seq = PySequence_Fast(dest, "dest must be a sequence of writable buffers");
        if (seq == NULL)
            goto done;
        room_slots = PySequence_Fast_GET_SIZE(seq);
    }
    if (room_slots > nsizes)
        room_slots = nsizes;
    if (want > room_slots)
        want = room_slots;
    views = PyMem_Calloc((size_t)(want ? want : 1), sizeof(Py_buffer));
    ptrs = PyMem_Calloc((size_t)(want ? want : 1), sizeof(uint8_t *));
    if (views == NULL || ptrs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; k < want; k++) {
        Py_ssize_t cap;
        uint8_t *base;
        if (slot > 0) {
            base = (uint8_t *)arena.buf + k * slot;
            cap = slot;
        } else {
            if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, k), &views[k], PyBUF_WRITABLE) < 0)
                goto done;
            nviews = k + 1;
            base = (uint8_t *)views[k].buf;
            cap = views[k].len;
        }
        if (cap - offset < planned_len(&sp, start + k))
            break; /* does not fit: waits for the next call (or is an error if it is the first) */
        ptrs[k] = base + offset;
    }
    Py_BEGIN_ALLOW_THREADS
    write_planned(&sp, start, k, ptrs);
    Py_END_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < k; i++)
        if (put_size(sizes, &sv, i, planned_len(&sp, start + i)) < 0)
            goto done;
    Py_ssize_t next = start + k < sp.count ? start + k : -1;
    result = Py_BuildValue("nnn", k, next, next < 0 ? (Py_ssize_t)0 : planned_len(&sp, next));
done:
    for (Py_ssize_t i = 0; i < nviews; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(ptrs);
    if (arena.buf != NULL)
        PyBuffer_Release(&arena);
    Py_XDECREF(seq);
    if (sv.buf != NULL)
        PyBuffer_Release(&sv);
    PyBuffer_Release(&fv);
    return result;
}

/* split_bytes(frame, tap) -> list[bytes] | None: split()/split_frame() of a frame as read (virtio
 * header in front), each packet a new bytes object; None when the reference split must decide. */
static PyObject *py_split_bytes(PyObject *self, PyObject *args) {
    Py_buffer fv;
    int tap;
    if (!PyArg_ParseTuple(args, "y*p", &fv, &tap))
        return NULL;
    SplitPlan sp;
    if (!plan_split((const uint8_t *)fv.buf, fv.len, tap, &sp)) {
        PyBuffer_Release(&fv);
        Py_RETURN_NONE;
    }
    PyObject *out = PyList_New(sp.count);
    uint8_t **ptrs = PyMem_Malloc(sizeof(uint8_t *) * (size_t)sp.count);
    if (out == NULL || ptrs == NULL) {
        Py_XDECREF(out);
        PyMem_Free(ptrs);
        PyBuffer_Release(&fv);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < sp.count; i++) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, planned_len(&sp, i));
        if (b == NULL) {
            Py_DECREF(out);
            PyMem_Free(ptrs);
            PyBuffer_Release(&fv);
            return NULL;
        }
        ptrs[i] = (uint8_t *)PyBytes_AS_STRING(b);
        PyList_SET_ITEM(out, i, b);
    }
    Py_BEGIN_ALLOW_THREADS
    write_planned(&sp, 0, sp.count, ptrs);
    Py_END_ALLOW_THREADS
    PyMem_Free(ptrs);
    PyBuffer_Release(&fv);
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

/* merge and emit: [(index, frame)] for the packets pk[0..cnt) (GIL released for the byte work) */
static PyObject *coalesce_run(Pkt *pk, int cnt, int udp_gro) {
    int nentries = 0;
    size_t slots = (size_t)(cnt ? cnt : 1);
    Item *items = PyMem_Calloc(slots, sizeof(Item));
    int *entries = PyMem_Malloc(sizeof(int) * slots);
    int *next = PyMem_Malloc(sizeof(int) * slots);
    uint8_t **dest = PyMem_Calloc(slots, sizeof(uint8_t *));
    PyObject *result = NULL;
    if (!items || !entries || !next || !dest) {
        PyErr_NoMemory();
        goto done;
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
    PyMem_Free(items);
    PyMem_Free(entries);
    PyMem_Free(next);
    PyMem_Free(dest);
    return result;
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
    int cnt = (int)count, got = 0;
    size_t slots = (size_t)(cnt ? cnt : 1);
    Py_buffer *views = PyMem_Calloc(slots, sizeof(Py_buffer));
    Pkt *pk = PyMem_Calloc(slots, sizeof(Pkt));
    PyObject *result = NULL;
    if (!views || !pk) {
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
    result = coalesce_run(pk, cnt, udp_gro);
done:
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(pk);
    Py_DECREF(seq);
    return result;
}

/* count packets of slot-byte slots (offset in each) fit the arena and the sizes; -1 with ValueError */
static int check_arena(const Py_buffer *arena, Py_ssize_t slot, Py_ssize_t nsizes, Py_ssize_t count,
                       Py_ssize_t offset) {
    if (slot <= 0 || offset < 0 || offset > slot || count < 0 || count > nsizes || count > arena->len / slot
        || count > 0x3FFFFFFF) {
        PyErr_Format(PyExc_ValueError,
                     "coalesce: %zd packets of %zd-byte slots (offset %zd) do not fit the arena of %zd bytes",
                     count, slot, offset, arena->len);
        return -1;
    }
    return 0;
}

/* pk[i] = packet i of an arena (sizes[i] bytes at i*slot + offset); -1 with ValueError when a
 * size does not fit its slot */
static int arena_packets(const Py_buffer *arena, Py_ssize_t slot, PyObject *sizes, Py_buffer *sv, Py_ssize_t count,
                         Py_ssize_t offset, Pkt *pk) {
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t n = get_size(sizes, sv, i);
        if (n == -2)
            return -1;
        if (n < 0 || n > slot - offset) {
            PyErr_Format(PyExc_ValueError, "sizes[%zd] is %zd: a packet of a %zd-byte slot after offset %zd "
                         "has 0 to %zd bytes", i, n, slot, offset, slot - offset);
            return -1;
        }
        pk[i].p = (const uint8_t *)arena->buf + i * slot + offset;
        pk[i].n = n;
    }
    return 0;
}

/* coalesce_slots(arena, slot, sizes, count, udp_gro, offset) -> list[(index, frame)]: coalesce_ip
 * over the first count packets of an arena, packet i at arena[i*slot + offset:][:sizes[i]]. */
static PyObject *py_coalesce_slots(PyObject *self, PyObject *args) {
    Py_buffer arena, sv;
    PyObject *sizes;
    Py_ssize_t slot, count, offset;
    int udp_gro;
    if (!PyArg_ParseTuple(args, "y*nOnpn", &arena, &slot, &sizes, &count, &udp_gro, &offset))
        return NULL;
    PyObject *result = NULL;
    Pkt *pk = NULL;
    Py_ssize_t nsizes = open_sizes(sizes, &sv, 0);
    if (nsizes < 0) {
        PyBuffer_Release(&arena);
        return NULL;
    }
    if (check_arena(&arena, slot, nsizes, count, offset) < 0)
        goto done;
    pk = PyMem_Calloc((size_t)(count ? count : 1), sizeof(Pkt));
    if (pk == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (arena_packets(&arena, slot, sizes, &sv, count, offset, pk) < 0)
        goto done;
    result = coalesce_run(pk, (int)count, udp_gro);
done:
    PyMem_Free(pk);
    if (sv.buf != NULL)
        PyBuffer_Release(&sv);
    PyBuffer_Release(&arena);
    return result;
}


/* ---- one call per batch for devices with an fd: the syscall and the byte work, GIL released once */
#ifndef _WIN32
static int wait_fd(int fd, short events, int stop_fd);

/* the packets of a planned frame from `start` that fit slots of `room` bytes (at most `slots`) */
static Py_ssize_t fitting(const SplitPlan *sp, Py_ssize_t start, Py_ssize_t slots, Py_ssize_t room) {
    Py_ssize_t k = 0;
    while (k < slots && start + k < sp->count && planned_len(sp, start + k) <= room)
        k++;
    return k;
}

/* write the planned packets start..start+k-1 to the slots beginning at base (stride slot) */
static void split_to_slots(const SplitPlan *sp, Py_ssize_t start, Py_ssize_t k, uint8_t *base, Py_ssize_t slot,
                           uint8_t **ptrs) {
    for (Py_ssize_t i = 0; i < k; i++)
        ptrs[i] = base + i * slot;
    write_planned(sp, start, k, ptrs);
}

/* read_split(fd, buf, arena, slot, sizes, offset, tap, stop_fd=-2)
 *   -> (frames, last_len, delivered, next, need, supers, nbytes)
 * Reads frames into buf and splits each into the arena's slots, without the GIL: recv_multiple
 * (PacketBatch) on an offload device. After the first frame, more are read while more are queued
 * and every packet of the last one fitted (the ACKs of a stream come many per call). The last
 * frame read stays in buf (last_len bytes); next: its next packet to deliver, -1 when all were,
 * -2 when it is malformed or unusual (the reference split takes it; delivered -1 if it was the
 * only frame). supers: frames that were super-packets; nbytes: the bytes delivered.
 * Read errors raise OSError; with nothing queued a nonblocking device raises BlockingIOError
 * (stop_fd -2) or is waited for until it is readable or stop_fd is (then frames is 0). */
static PyObject *py_read_split(PyObject *self, PyObject *args) {
    int fd, tap, stop_fd = -2;
    Py_buffer buf, arena, sv;
    PyObject *sizes;
    Py_ssize_t slot, offset;
    if (!PyArg_ParseTuple(args, "iw*w*nOnp|i", &fd, &buf, &arena, &slot, &sizes, &offset, &tap, &stop_fd))
        return NULL;
    PyObject *result = NULL;
    uint8_t **ptrs = NULL;
    Py_ssize_t *lens = NULL;
    Py_ssize_t nsizes = open_sizes(sizes, &sv, 1);
    if (nsizes < 0)
        goto out;
    if (slot <= 0 || offset < 0 || offset >= slot) {
        PyErr_SetString(PyExc_ValueError, "read_split: slot > offset >= 0");
        goto out;
    }
    Py_ssize_t slots = arena.len / slot < nsizes ? arena.len / slot : nsizes;
    ptrs = PyMem_Malloc(sizeof(uint8_t *) * (size_t)(slots ? slots : 1));
    lens = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(slots ? slots : 1));
    if (ptrs == NULL || lens == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    ssize_t n = 0;
    int err = 0, stopped = 0;
    Py_ssize_t frames = 0, got = 0, next = -1, need = 0, supers = 0, nbytes = 0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        n = read(fd, buf.buf, (size_t)buf.len);
        if (n >= 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN && stop_fd >= -1) {
            int r = wait_fd(fd, POLLIN, stop_fd);
            if (r == 1)
                continue;
            stopped = r == 0;
            if (r < 0)
                err = errno == EAGAIN ? EBADF : errno; /* POLLNVAL: the fd is gone */
            break;
        }
        err = errno;
        break;
    }
    while (!err && !stopped) {
        frames++;
        SplitPlan sp;
        if (n > 1 && ((const uint8_t *)buf.buf)[1])
            supers++;
        if (!plan_split((const uint8_t *)buf.buf, n, tap, &sp)) {
            next = -2;
            break;
        }
        Py_ssize_t k = fitting(&sp, 0, slots - got, slot - offset);
        split_to_slots(&sp, 0, k, (uint8_t *)arena.buf + offset + got * slot, slot, ptrs + got);
        for (Py_ssize_t i = 0; i < k; i++) {
            lens[got + i] = planned_len(&sp, i);
            nbytes += lens[got + i];
        }
        got += k;
        if (k < sp.count) {
            next = k;
            need = planned_len(&sp, k);
            break;
        }
        if (got >= slots)
            break;
        struct pollfd more = {fd, POLLIN, 0};
        if (poll(&more, 1, 0) != 1 || !(more.revents & POLLIN))
            break;
        ssize_t m;
        do {
            m = read(fd, buf.buf, (size_t)buf.len);
        } while (m < 0 && errno == EINTR);
        if (m < 0)
            break; /* EAGAIN (another reader was first) or an error the next call meets */
        n = m;
    }
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto out;
    }
    for (Py_ssize_t i = 0; i < got; i++)
        if (put_size(sizes, &sv, i, lens[i]) < 0)
            goto out;
    if (next == -2 && frames == 1)
        got = -1;
    result = Py_BuildValue("nnnnnnn", frames, (Py_ssize_t)n, got, next, need, supers, nbytes);
out:
    PyMem_Free(ptrs);
    PyMem_Free(lens);
    if (sv.buf != NULL)
        PyBuffer_Release(&sv);
    PyBuffer_Release(&arena);
    PyBuffer_Release(&buf);
    return result;
}

/* coalesce_write(fd, arena, slot, sizes, count, udp_gro, offset, stop_fd)
 *   -> (consumed, bytes, blocked, [errno, ...])
 * coalesce_slots and the writes of its frames without the GIL: send_multiple(PacketBatch) on an
 * offload device. A refused frame is consumed with its errno listed; a full device (EAGAIN)
 * waits for room when stop_fd >= -1 (-1: no stop fd; returns blocked if stop_fd turns
 * readable) and returns blocked at once when stop_fd is -2. */
static PyObject *py_coalesce_write(PyObject *self, PyObject *args) {
    int fd, udp_gro, stop_fd;
    Py_buffer arena, sv;
    PyObject *sizes;
    Py_ssize_t slot, count, offset;
    if (!PyArg_ParseTuple(args, "iy*nOnpni", &fd, &arena, &slot, &sizes, &count, &udp_gro, &offset, &stop_fd))
        return NULL;
    PyObject *result = NULL, *errs = NULL;
    Pkt *pk = NULL;
    Item *items = NULL;
    int *entries = NULL, *next = NULL, *errnos = NULL;
    uint8_t *scratch = NULL;
    Py_ssize_t nsizes = open_sizes(sizes, &sv, 0);
    if (nsizes < 0) {
        PyBuffer_Release(&arena);
        return NULL;
    }
    if (check_arena(&arena, slot, nsizes, count, offset) < 0)
        goto done;
    size_t cap = (size_t)(count ? count : 1);
    pk = PyMem_Calloc(cap, sizeof(Pkt));
    items = PyMem_Calloc(cap, sizeof(Item));
    entries = PyMem_Malloc(sizeof(int) * cap);
    next = PyMem_Malloc(sizeof(int) * cap);
    errnos = PyMem_Malloc(sizeof(int) * cap);
    scratch = PyMem_Malloc((size_t)(VNET_LEN + (slot > MAX_PACKET ? slot : MAX_PACKET)));
    if (!pk || !items || !entries || !next || !errnos || !scratch) {
        PyErr_NoMemory();
        goto done;
    }
    if (arena_packets(&arena, slot, sizes, &sv, count, offset, pk) < 0)
        goto done;
    int nentries = 0, consumed = 0, blocked = 0, nerr = 0;
    uint64_t written = 0;
    Py_BEGIN_ALLOW_THREADS
    nentries = merge(pk, (int)count, udp_gro, items, entries, next);
    for (int e = 0; e < nentries && !blocked; e++) {
        Py_ssize_t len = entry_size(pk, items, entries[e]);
        emit(pk, items, entries[e], next, scratch);
        for (;;) {
            ssize_t m = write(fd, scratch, (size_t)len);
            if (m >= 0) {
                written += (uint64_t)m;
                consumed++;
                break;
            }
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (stop_fd >= -1 && wait_fd(fd, POLLOUT, stop_fd) == 1)
                    continue;
                blocked = 1;
                break;
            }
            errnos[nerr++] = errno; /* refused: consumed, reported */
            consumed++;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    errs = PyList_New(nerr);
    if (errs == NULL)
        goto done;
    for (int i = 0; i < nerr; i++) {
        PyObject *v = PyLong_FromLong(errnos[i]);
        if (v == NULL)
            goto done;
        PyList_SET_ITEM(errs, i, v);
    }
    result = Py_BuildValue("iKiO", consumed, (unsigned long long)written, blocked, errs);
done:
    Py_XDECREF(errs);
    PyMem_Free(pk);
    PyMem_Free(items);
    PyMem_Free(entries);
    PyMem_Free(next);
    PyMem_Free(errnos);
    PyMem_Free(scratch);
    if (sv.buf != NULL)
        PyBuffer_Release(&sv);
    PyBuffer_Release(&arena);
    return result;
}
#endif

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

/* ---- ready(value): an awaitable that is done already ----------------------------------------
 * `await ready(v)` is v at once. Framed hands one out for a packet split earlier and for a send
 * that only queued, where a coroutine per packet cost more than the packet's own work. am_send
 * answers PYGEN_RETURN, so the interpreter's await takes the value without an exception; the
 * iterator protocol (tp_iternext) is there for callers that drive it by hand. Stateless: one
 * object may be awaited any number of times. */
typedef struct {
    PyObject_HEAD
    PyObject *value;
} Ready;

static void ready_dealloc(Ready *self) {
    Py_XDECREF(self->value);
    PyObject_Free(self);
}

static PyObject *ready_await(PyObject *self) {
    Py_INCREF(self);
    return self;
}

static PyObject *ready_next(Ready *self) {
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, self->value);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

static PySendResult ready_send(PyObject *self, PyObject *arg, PyObject **result) {
    (void)arg;
    PyObject *value = ((Ready *)self)->value;
    Py_INCREF(value);
    *result = value;
    return PYGEN_RETURN;
}

static PyAsyncMethods ready_async = {ready_await, NULL, NULL, ready_send};

static PyTypeObject ReadyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tunlab.devices.offload._fast.Ready",
    .tp_basicsize = sizeof(Ready),
    .tp_dealloc = (destructor)ready_dealloc,
    .tp_as_async = &ready_async,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An awaitable that is done already: awaiting it gives its value.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)ready_next,
};

static PyObject *py_ready(PyObject *self, PyObject *value) {
    (void)self;
    Ready *r = PyObject_New(Ready, &ReadyType);
    if (r == NULL)
        return NULL;
    Py_INCREF(value);
    r->value = value;
    return (PyObject *)r;
}

/* ---- packet_reader(pending, fallback): Framed's async iterator ------------------------------
 * `async for packet in framed` asks am_anext once per packet: a packet already split (in the
 * pending deque) comes back as a Ready at once, with no Python frame on the way; an empty
 * deque hands the wait to fallback() (a coroutine that reads the device). */
typedef struct {
    PyObject_HEAD
    PyObject *pending;
    PyObject *popleft;
    PyObject *fallback;
} Reader;

static int reader_traverse(Reader *self, visitproc visit, void *arg) {
    Py_VISIT(self->pending);
    Py_VISIT(self->popleft);
    Py_VISIT(self->fallback);
    return 0;
}

static int reader_clear(Reader *self) {
    Py_CLEAR(self->pending);
    Py_CLEAR(self->popleft);
    Py_CLEAR(self->fallback);
    return 0;
}

static void reader_dealloc(Reader *self) {
    PyObject_GC_UnTrack(self);
    reader_clear(self);
    PyObject_GC_Del(self);
}

static PyObject *reader_aiter(PyObject *self) {
    Py_INCREF(self);
    return self;
}

static PyObject *reader_anext(Reader *self) {
    Py_ssize_t queued = PyObject_Size(self->pending);
    if (queued < 0)
        return NULL;
    if (queued == 0)
        return PyObject_CallNoArgs(self->fallback);
    PyObject *packet = PyObject_CallNoArgs(self->popleft);
    if (packet == NULL)
        return NULL;
    Ready *r = PyObject_New(Ready, &ReadyType);
    if (r == NULL) {
        Py_DECREF(packet);
        return NULL;
    }
    r->value = packet;
    return (PyObject *)r;
}

static PyAsyncMethods reader_async = {NULL, reader_aiter, (unaryfunc)reader_anext, NULL};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tunlab.devices.offload._fast.PacketReader",
    .tp_basicsize = sizeof(Reader),
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_as_async = &reader_async,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Framed's async iterator: queued packets at once, else fallback() waits for a read.",
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_clear = (inquiry)reader_clear,
};

static PyObject *py_packet_reader(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *pending, *fallback;
    if (!PyArg_ParseTuple(args, "OO", &pending, &fallback))
        return NULL;
    PyObject *popleft = PyObject_GetAttrString(pending, "popleft");
    if (popleft == NULL)
        return NULL;
    Reader *r = PyObject_GC_New(Reader, &ReaderType);
    if (r == NULL) {
        Py_DECREF(popleft);
        return NULL;
    }
    Py_INCREF(pending);
    Py_INCREF(fallback);
    r->pending = pending;
    r->popleft = popleft;
    r->fallback = fallback;
    PyObject_GC_Track(r);
    return (PyObject *)r;
}

static PyMethodDef methods[] = {
    {"ready", py_ready, METH_O, "ready(value) -> Awaitable: done already; awaiting it gives value"},
    {"packet_reader", py_packet_reader, METH_VARARGS,
     "packet_reader(pending, fallback) -> AsyncIterator: pending.popleft() as a Ready, else fallback()"},
    {"ones_sum", py_ones_sum, METH_VARARGS,
     "ones_sum(data, initial=0) -> int: the one's-complement sum of data, modulo 0xFFFF"},
    {"segment", py_segment, METH_VARARGS,
     "segment(packet, version, iph, proto, hdr_len, gso) -> list[bytes]: GSO segments with checksums"},
    {"coalesce_ip", py_coalesce_ip, METH_VARARGS,
     "coalesce_ip(packets, udp_gro=False, offset=0) -> list[(index, frame)]: GRO over packets[i][offset:]"},
    {"coalesce_slots", py_coalesce_slots, METH_VARARGS,
     "coalesce_slots(arena, slot, sizes, count, udp_gro, offset) -> list[(index, frame)]: coalesce_ip over an arena"},
    {"split_bytes", py_split_bytes, METH_VARARGS,
     "split_bytes(frame, tap) -> list[bytes] | None: split() of a frame as read, each packet a bytes"},
    {"split_into", py_split_into, METH_VARARGS,
     "split_into(frame, start, dest, sizes, offset, slot, tap) -> (delivered, next, need) | None: split() into buffers"},
    {"drain", py_drain, METH_VARARGS,
     "drain(pending, bufs, sizes, offset) -> int: queued packets into the caller's buffers"},
#ifndef _WIN32
    {"read_split", py_read_split, METH_VARARGS,
     "read_split(fd, buf, arena, slot, sizes, offset, tap, stop_fd=-2) -> (frames, last_len, delivered, next, "
     "need, supers, nbytes): reads + split into an arena"},
    {"coalesce_write", py_coalesce_write, METH_VARARGS,
     "coalesce_write(fd, arena, slot, sizes, count, udp_gro, offset, stop_fd) -> (consumed, bytes, blocked, "
     "errnos): coalesce + write"},
    {"pump", py_pump, METH_VARARGS,
     "pump(fd_in, fd_out, read_size, counters, vnet, stop_fd, drop) -> None: a relay direction"},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fast", "The compiled offload core and relay pump of tunlab.", -1, methods,
};

PyMODINIT_FUNC PyInit__fast(void) {
    if (PyType_Ready(&ReadyType) < 0 || PyType_Ready(&ReaderType) < 0)
        return NULL;
    return PyModule_Create(&module);
}
