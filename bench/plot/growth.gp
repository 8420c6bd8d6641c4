# growth.gp: stack growth cost against stack size, log-log.
# Called by bench/run.py with datadir (holding growth.dat) and out (the SVG).
# growth.dat columns: bytes, then growth cost in us (first call - second
# call) for goro cold, goro warm, Go cold, Go warm, threads cold; run.py
# writes values of 0.01 us or less as 0.01 so that a log axis can draw them.
set terminal svg size 820,520 dynamic font "sans,12"
set output out
set title "Stack growth cost (first call - second call), medians over rounds"
set logscale xy
set xlabel "stack size reached"
set ylabel "growth cost, us (values <= 0.01 drawn at 0.01)"
set xtics ("8 KiB" 8192, "64 KiB" 65536, "1 MiB" 1048576, "16 MiB" 16777216)
set xrange [5000:27000000]
set format y "%g"
set yrange [0.005:*]
set grid
set key top left
data = datadir."/growth.dat"
plot data using 1:2 with linespoints lw 2 pt 7 title "goro, cold", \
     data using 1:3 with linespoints lw 2 pt 6 dt 2 title "goro, warm", \
     data using 1:4 with linespoints lw 2 pt 5 title "Go, cold", \
     data using 1:5 with linespoints lw 2 pt 4 dt 2 title "Go, warm", \
     data using 1:6 with linespoints lw 2 pt 2 dt 3 lc rgb "#444444" title "threads, cold"
