// grpcload: a closed-loop gRPC load generator for unary calls (the gRPC counterpart of wrk).
//
// Each of -concurrency workers sends a pre-serialized request, waits for the answer, and
// sends the next; requests cycle through the messages in -data (a file of length-prefixed
// protobuf messages: 4-byte big-endian length, then the bytes). Messages are sent as they
// are (a raw-bytes codec), so the generator needs no generated code and costs little CPU
// next to a server on the same machine. Prints one JSON object.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
)

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: want *[]byte, got %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: want *[]byte, got %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" } // the wire content-subtype servers expect

var _ encoding.Codec = rawCodec{}

func readMessages(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var msgs [][]byte
	for len(data) > 0 {
		if len(data) < 4 {
			return nil, fmt.Errorf("%s: truncated length prefix", path)
		}
		n := int(binary.BigEndian.Uint32(data[:4]))
		if len(data) < 4+n {
			return nil, fmt.Errorf("%s: message of %d bytes truncated", path, n)
		}
		msgs = append(msgs, data[4:4+n])
		data = data[4+n:]
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("%s: no messages", path)
	}
	return msgs, nil
}

type result struct {
	Concurrency int     `json:"concurrency"`
	Connections int     `json:"connections"`
	Seconds     float64 `json:"seconds"`
	Requests    int     `json:"requests"`
	Completed   int     `json:"completed"` // answered calls over the whole run, warm-up and tail included
	Errors      int     `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	RPS         float64 `json:"requests_per_s"`
	P50ms       float64 `json:"p50_ms"`
	P90ms       float64 `json:"p90_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
}

func pct(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return float64(sorted[i].Microseconds()) / 1000
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "server host:port")
	method := flag.String("method", "/inference.GRPCInferenceService/ModelInfer", "full method name")
	dataPath := flag.String("data", "", "file of length-prefixed request messages")
	concurrency := flag.Int("concurrency", 1, "closed-loop workers")
	connections := flag.Int("connections", 4, "HTTP/2 connections shared by the workers")
	duration := flag.Duration("duration", 5*time.Second, "measured time")
	warmup := flag.Duration("warmup", time.Second, "load before measuring")
	timeout := flag.Duration("timeout", 60*time.Second, "per-call deadline")
	flag.Parse()
	if *dataPath == "" || *concurrency < 1 || *connections < 1 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "usage: grpcload -data FILE -addr HOST:PORT [-concurrency N] [-duration 5s]")
		os.Exit(2)
	}
	msgs, err := readMessages(*dataPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcload:", err)
		os.Exit(2)
	}
	conns := make([]*grpc.ClientConn, *connections)
	for i := range conns {
		conns[i], err = grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpcload:", err)
			os.Exit(2)
		}
		defer conns[i].Close()
	}
	start := time.Now().Add(*warmup)
	stop := start.Add(*duration)
	var mu sync.Mutex
	var lat []time.Duration
	errs, firstErr, completed := 0, "", 0
	var wg sync.WaitGroup
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			conn := conns[w%len(conns)]
			var mine []time.Duration
			myErrs, myFirst, myDone := 0, "", 0
			var reply []byte
			for k := 0; ; k++ {
				t := time.Now()
				if !t.Before(stop) {
					break
				}
				req := msgs[(w*7+k)%len(msgs)]
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				err := conn.Invoke(ctx, *method, &req, &reply, grpc.ForceCodec(rawCodec{}))
				cancel()
				done := time.Now()
				if err != nil {
					myErrs++
					if myFirst == "" {
						myFirst = err.Error()
					}
					continue
				}
				myDone++
				if !t.Before(start) && !done.After(stop) {
					mine = append(mine, done.Sub(t))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += myErrs
			completed += myDone
			if firstErr == "" {
				firstErr = myFirst
			}
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	res := result{Concurrency: *concurrency, Connections: *connections, Seconds: duration.Seconds(),
		Requests: len(lat), Completed: completed, Errors: errs, FirstError: firstErr, RPS: float64(len(lat)) / duration.Seconds(),
		P50ms: pct(lat, 0.50), P90ms: pct(lat, 0.90), P99ms: pct(lat, 0.99)}
	if len(lat) > 0 {
		res.MaxMs = float64(lat[len(lat)-1].Microseconds()) / 1000
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}
