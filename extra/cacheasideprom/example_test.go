package cacheasideprom_test

import (
	"log"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/extra/cacheasideprom"
)

// Register one collector for every part of the service and serve /metrics.
func Example() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	users, err := cache.New(rdb, &cache.Options{Prefix: "svc:"})
	if err != nil {
		log.Fatal(err)
	}
	defer users.Close()

	col := cacheasideprom.New(nil)
	col.AddCache("users", users)
	// col.AddInvalidator("main", inv); col.AddFilter("users", filter)
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
}
