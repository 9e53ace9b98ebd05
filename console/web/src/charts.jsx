// Charts drawn by Chart.js (line, bar) and chartjs-chart-sankey, registered piecemeal so the bundle
// holds only what is used. Chart.js draws on a canvas and sets the canvas's size through the CSSOM
// (element.style), which a `style-src 'self'` policy allows; it injects no <style> and evaluates no
// strings. Each chart has an aria-label, and each page shows its numbers in a table as well.
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from 'chart.js'
import { Flow, SankeyController } from 'chartjs-chart-sankey'
import { useEffect, useRef } from 'preact/hooks'

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
  SankeyController,
  Flow,
)
Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif'
Chart.defaults.color = '#1f2933'
// Screenshots and people who asked for less motion see the final picture at once.
Chart.defaults.animation = false

export const PALETTE = ['#1d4ed8', '#b45309', '#047857', '#7c3aed', '#be123c', '#0e7490']

export function ChartCanvas({ type, data, options, label, height = 280 }) {
  const canvas = useRef(null)
  const chart = useRef(null)
  useEffect(() => {
    chart.current = new Chart(canvas.current, {
      type,
      data,
      options: { responsive: true, maintainAspectRatio: false, ...options },
    })
    return () => chart.current.destroy()
  }, [type, JSON.stringify(data), JSON.stringify(options)])
  return (
    <div class={`chart chart-h${height}`}>
      <canvas ref={canvas} role="img" aria-label={label} />
    </div>
  )
}
