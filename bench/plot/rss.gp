# rss.gp: resident memory of N parked goroutines against N, log-log.
# Called by bench/run.py with datadir (holding rss.dat) and out (the SVG).
# rss.dat columns: goroutines, then the memory delta in MiB for goro VmRSS,
# goro VmRSS + VmPTE, Go VmRSS, Go VmRSS + VmPTE.
set terminal svg size 820,520 dynamic font "sans,12"
set output out
set title "Memory of N parked goroutines (delta from before the first spawn)"
set logscale xy
set xlabel "goroutines"
set ylabel "MiB"
set xtics ("10k" 10000, "100k" 100000, "300k" 300000, "1M" 1000000)
set xrange [7000:1400000]
set format y "%g"
set grid
set key top left
data = datadir."/rss.dat"
plot data using 1:2 with linespoints lw 2 pt 7 title "goro, VmRSS", \
     data using 1:3 with linespoints lw 2 pt 6 dt 2 title "goro, VmRSS + VmPTE", \
     data using 1:4 with linespoints lw 2 pt 5 title "Go, VmRSS", \
     data using 1:5 with linespoints lw 2 pt 4 dt 2 title "Go, VmRSS + VmPTE"
