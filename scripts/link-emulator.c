// link-emulator: the switch of scripts/islands when a one-way delay is wanted
// (this kernel has no netem). For each host namespace it opens a TAP device
// named eth0 inside that namespace; the emulator holds the other end of every
// TAP and forwards frames between them like a learning Ethernet switch.
//
// Each host link is full duplex at --rate R each way: a frame from host i is
// serialized on i's uplink, then on the destination's downlink (frames leave
// no earlier than the previous frame's end), then delivered --delay D later.
// Each direction has a tail-drop queue of --queue bytes (frames waiting to be
// serialized), like a switch port buffer.
//
//   link-emulator [--rate 100mbit|none] [--delay 20ms] [--queue BYTES]
//                 [--pidfile F] NS...        (NS: a name in /run/netns or a path)
// Build: cc -O2 -pthread -o link-emulator link-emulator.c
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct pkt { struct pkt *next; int64_t t; uint32_t len; unsigned char d[]; };
struct fifo { struct pkt *head, *tail; size_t bytes; };
struct port {
  const char *ns;
  int fd;
  struct fifo up, down;        // up: ordered by end of uplink serialization; down: by delivery time
  int64_t up_free, down_free;  // when the link has serialized everything queued on it
  uint64_t in, out, drops;
};
struct mac { unsigned char a[6]; int port; };

static struct port *ports;
static int nports;
static struct mac *macs;
static int nmacs;
static double rate_bps;        // 0: unlimited
static int64_t delay_ns;
static size_t qlimit;
static volatile sig_atomic_t stop;

static void die(const char *what) { fprintf(stderr, "link-emulator: %s: %s\n", what, strerror(errno)); exit(1); }
static void usage(void) {
  fprintf(stderr, "usage: link-emulator [--rate R|none] [--delay D] [--queue BYTES] [--pidfile F] NS...\n");
  exit(2);
}
static int64_t mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
static void on_signal(int sig) { (void)sig; stop = 1; }

// tc's units: bit/kbit/mbit/gbit are bits per second (powers of 1000),
// bps/kbps/mbps/gbps bytes per second; a bare number is bits per second.
static double parse_rate(const char *s) {
  if (!strcasecmp(s, "none")) return 0;
  char *e;
  double v = strtod(s, &e);
  static const struct { const char *u; double f; } units[] = {
    {"", 1}, {"bit", 1}, {"kbit", 1e3}, {"mbit", 1e6}, {"gbit", 1e9}, {"tbit", 1e12},
    {"bps", 8}, {"kbps", 8e3}, {"mbps", 8e6}, {"gbps", 8e9}};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (e != s && v > 0 && !strcasecmp(e, units[i].u)) return v * units[i].f;
  fprintf(stderr, "link-emulator: bad rate '%s' (e.g. 100mbit, 1gbit, none)\n", s);
  exit(2);
}
// tc's units too: s, ms/msec, us/usec; a bare number is microseconds.
static int64_t parse_delay(const char *s) {
  if (!strcasecmp(s, "none")) return 0;
  char *e;
  double v = strtod(s, &e);
  double f = -1;
  if (!*e || !strcasecmp(e, "us") || !strcasecmp(e, "usec")) f = 1e3;
  else if (!strcasecmp(e, "ms") || !strcasecmp(e, "msec")) f = 1e6;
  else if (!strcasecmp(e, "s") || !strcasecmp(e, "sec")) f = 1e9;
  if (e == s || f < 0 || v < 0 || v > 60) {
    fprintf(stderr, "link-emulator: bad delay '%s' (e.g. 20ms, 500us, 0)\n", s);
    exit(2);
  }
  return (int64_t)(v * f + 0.5);
}
static size_t parse_bytes(const char *s) {
  char *e;
  double v = strtod(s, &e);
  double f = !*e ? 1 : !strcasecmp(e, "k") || !strcasecmp(e, "kb") ? 1024
           : !strcasecmp(e, "m") || !strcasecmp(e, "mb") ? 1048576 : -1;
  if (e == s || f < 0 || v < 1) usage();
  return (size_t)(v * f);
}

static int64_t ser_ns(uint32_t len) { return rate_bps ? (int64_t)(len * 8e9 / rate_bps) : 0; }
// Bytes still to be serialized on a link that is busy until `busy` at time t.
static double backlog(int64_t busy, int64_t t) { return busy > t ? (busy - t) * rate_bps / 8e9 : 0; }

static void push(struct fifo *q, struct pkt *p) {
  p->next = NULL;
  if (q->tail) q->tail->next = p; else q->head = p;
  q->tail = p;
  q->bytes += p->len;
}
static struct pkt *pop(struct fifo *q) {
  struct pkt *p = q->head;
  q->head = p->next;
  if (!q->head) q->tail = NULL;
  q->bytes -= p->len;
  return p;
}

// Opens eth0 as a TAP inside namespace ns: the TAP belongs to the namespace
// the opener is in at TUNSETIFF, and its fd keeps working after setns back.
static int open_tap(const char *ns, int home) {
  char path[512];
  snprintf(path, sizeof path, strchr(ns, '/') ? "%s" : "/run/netns/%s", ns);
  int nsfd = open(path, O_RDONLY | O_CLOEXEC);
  if (nsfd < 0) die(path);
  if (setns(nsfd, CLONE_NEWNET) < 0) die("setns");
  close(nsfd);
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) die("/dev/net/tun");
  struct ifreq ifr = {0};
  strcpy(ifr.ifr_name, "eth0");
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF eth0");
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);  // in ns: configures its eth0
  if (s < 0) die("socket");
  ifr.ifr_mtu = 1500;
  if (ioctl(s, SIOCSIFMTU, &ifr) < 0) die("SIOCSIFMTU");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) die("SIOCGIFFLAGS");
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) die("SIOCSIFFLAGS");
  close(s);
  if (setns(home, CLONE_NEWNET) < 0) die("setns back");
  return fd;
}

static int lookup(const unsigned char *a) {
  for (int i = 0; i < nmacs; i++)
    if (!memcmp(macs[i].a, a, 6)) return macs[i].port;
  return -1;
}
static void learn(const unsigned char *a, int port) {
  if (a[0] & 1) return;  // a multicast source is bogus
  for (int i = 0; i < nmacs; i++)
    if (!memcmp(macs[i].a, a, 6)) { macs[i].port = port; return; }
  if (nmacs == 64 * nports) nmacs = 0;  // full: forget (hosts re-learn from traffic)
  memcpy(macs[nmacs].a, a, 6);
  macs[nmacs++].port = port;
}

// Frame p reaches the switch at time t: onto port j's downlink.
static void to_downlink(int j, struct pkt *p, int64_t t) {
  struct port *o = &ports[j];
  if (rate_bps) {
    int64_t start = o->down_free > t ? o->down_free : t;
    if (backlog(o->down_free, t) + p->len > qlimit) { o->drops++; free(p); return; }
    o->down_free = start + ser_ns(p->len);
    p->t = o->down_free + delay_ns;
  } else {
    if (o->down.bytes + p->len > qlimit) { o->drops++; free(p); return; }  // bounds the delay line
    p->t = t + delay_ns;
  }
  push(&o->down, p);
}

// A frame that finished its uplink from port i at p->t: switch it.
static void forward(int i, struct pkt *p) {
  int64_t t = p->t;
  learn(p->d + 6, i);
  int j = (p->d[0] & 1) ? -1 : lookup(p->d);
  if (j == i) { free(p); return; }  // both ends on the same port: a switch filters it
  if (j >= 0) { to_downlink(j, p, t); return; }
  for (j = 0; j < nports; j++) {  // broadcast, multicast, unknown unicast: flood
    if (j == i) continue;
    struct pkt *c = malloc(sizeof *c + p->len);
    if (!c) die("malloc");
    memcpy(c, p, sizeof *c + p->len);
    to_downlink(j, c, t);
  }
  free(p);
}

// Runs everything due by `now`: uplink ends in time order across ports (so
// downlinks see frames in the order they arrived), then deliveries.
static void advance(int64_t now) {
  for (;;) {
    int best = -1;
    for (int i = 0; i < nports; i++) {
      struct pkt *h = ports[i].up.head;
      if (h && h->t <= now && (best < 0 || h->t < ports[best].up.head->t)) best = i;
    }
    if (best < 0) break;
    forward(best, pop(&ports[best].up));
  }
  for (int j = 0; j < nports; j++) {
    struct port *o = &ports[j];
    while (o->down.head && o->down.head->t <= now) {
      struct pkt *p = pop(&o->down);
      if (write(o->fd, p->d, p->len) == (ssize_t)p->len) o->out++; else o->drops++;
      free(p);
    }
  }
}

static void from_host(int i, const unsigned char *buf, uint32_t len, int64_t now) {
  struct port *o = &ports[i];
  o->in++;
  if (len < 14) return;
  int64_t t = now;
  if (rate_bps) {
    if (backlog(o->up_free, now) + len > qlimit) { o->drops++; return; }
    o->up_free = (o->up_free > now ? o->up_free : now) + ser_ns(len);
    t = o->up_free;
  }
  struct pkt *p = malloc(sizeof *p + len);
  if (!p) die("malloc");
  p->t = t;
  p->len = len;
  memcpy(p->d, buf, len);
  push(&o->up, p);
}

int main(int argc, char **argv) {
  const char *rate_s = "none", *delay_s = "0", *pidfile = NULL;
  size_t queue = 0;
  int a = 1;
  for (; a < argc && !strncmp(argv[a], "--", 2); a += 2) {
    if (a + 1 >= argc) usage();
    if (!strcmp(argv[a], "--rate")) rate_s = argv[a + 1];
    else if (!strcmp(argv[a], "--delay")) delay_s = argv[a + 1];
    else if (!strcmp(argv[a], "--queue")) queue = parse_bytes(argv[a + 1]);
    else if (!strcmp(argv[a], "--pidfile")) pidfile = argv[a + 1];
    else usage();
  }
  nports = argc - a;
  if (nports < 1) usage();
  rate_bps = parse_rate(rate_s);
  delay_ns = parse_delay(delay_s);
  // Default queue: 100 ms at the rate (what tbf gets in scripts/islands), and
  // at least one round trip's worth so that one TCP flow can fill the link.
  double bdp = rate_bps / 8 * (delay_ns * 2e-9 > 0.1 ? delay_ns * 2e-9 : 0.1);
  qlimit = queue ? queue : rate_bps ? (size_t)(bdp > 65536 ? bdp : 65536) : 64u << 20;

  ports = calloc(nports, sizeof *ports);
  macs = calloc(64 * nports, sizeof *macs);
  struct pollfd *pfd = calloc(nports, sizeof *pfd);
  if (!ports || !macs || !pfd) die("calloc");
  int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) die("/proc/self/ns/net");
  for (int i = 0; i < nports; i++) {
    ports[i].ns = argv[a + i];
    ports[i].fd = open_tap(ports[i].ns, home);
    pfd[i] = (struct pollfd){.fd = ports[i].fd, .events = POLLIN};
  }
  close(home);

  // Signals only arrive inside ppoll, so a stop is never missed between checks.
  sigset_t block, wait_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  sigprocmask(SIG_BLOCK, &block, &wait_mask);
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_TIMERSLACK, 1UL);  // wake-ups within microseconds, not the default 50 us

  printf("link-emulator: %d host(s) (", nports);
  for (int i = 0; i < nports; i++) printf("%s%s", i ? " " : "", ports[i].ns);
  printf(") on a userspace switch, eth0 a TAP in each; each link, each way: rate %s, one-way delay %s, queue %zu bytes\n",
         rate_bps ? rate_s : "unlimited", delay_s, qlimit);
  fflush(stdout);
  if (pidfile) {  // written last: its presence says the TAPs exist
    FILE *f = fopen(pidfile, "w");
    if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f)) die(pidfile);
  }

  static unsigned char buf[65536];
  while (!stop) {
    int64_t now = mono();
    advance(now);
    int64_t next = INT64_MAX;
    for (int i = 0; i < nports; i++) {
      if (ports[i].up.head && ports[i].up.head->t < next) next = ports[i].up.head->t;
      if (ports[i].down.head && ports[i].down.head->t < next) next = ports[i].down.head->t;
    }
    struct timespec ts, *tp = NULL;
    if (next != INT64_MAX) {
      int64_t d = next > now ? next - now : 0;
      ts = (struct timespec){.tv_sec = d / 1000000000, .tv_nsec = d % 1000000000};
      tp = &ts;
    }
    int r = ppoll(pfd, nports, tp, &wait_mask);
    if (r < 0 && errno != EINTR) die("ppoll");
    if (r <= 0) continue;
    now = mono();
    for (int i = 0; i < nports; i++) {
      if (pfd[i].revents & (POLLERR | POLLNVAL)) { errno = EIO; die(ports[i].ns); }
      if (!(pfd[i].revents & POLLIN)) continue;
      for (int k = 0; k < 64; k++) {  // a batch, then let the other hosts in
        ssize_t m = read(ports[i].fd, buf, sizeof buf);
        if (m < 0) break;
        from_host(i, buf, (uint32_t)m, now);
      }
    }
  }

  uint64_t in = 0, out = 0, drops = 0;
  for (int i = 0; i < nports; i++) in += ports[i].in, out += ports[i].out, drops += ports[i].drops;
  fprintf(stderr, "link-emulator: stopped: %llu frames in, %llu delivered, %llu dropped\n",
          (unsigned long long)in, (unsigned long long)out, (unsigned long long)drops);
  if (pidfile) unlink(pidfile);
  return 0;  // closing the TAP fds removes the eth0 devices
}
